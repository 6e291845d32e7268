//! The MQTT collector against a real Mosquitto (Debian, started here on a
//! loopback port): JSON and Sparkplug B readings with their values and
//! timestamps, a death turning points bad, a sequence gap asking for a
//! rebirth, every kind of bad message counted while the collector goes on,
//! a graceful broker restart with a persistent session losing nothing, a
//! hard kill (session lost) followed by a resubscribe, and a silent
//! subscription sent again. Ground truth comes from the broker's own
//! acknowledgements to the publisher and from SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_mosquitto;
mod support_mqtt;
mod support_vm;
mod support_wait;

use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_core::{Quality, Reason, Timestamp, Value};
use adit_mqtt::sparkplug::proto::{datatype, Metric, MetricValue, Payload};
use prost::Message as _;
use support_mosquitto::{Mosquitto, MosquittoOptions};
use support_mqtt::{config_text, count, metric, rows, rows_us, subscribe, Publisher};
use support_vm::free_port;
use support_wait::wait_for;

const SUBSCRIPTIONS: &str = "\
[[device.subscription]]
filter = \"tunnel/+/sensors/+\"
template = \"tunnel/{bore}/sensors/{sensor}\"
point = \"{bore}.{sensor}\"
timestamp = \"/ts\"
unit = \"ppm\"

[[device.subscription]]
filter = \"spBv1.0/t/#\"
format = \"sparkplug\"

[[device.subscription]]
filter = \"plant/#\"
format = \"plain\"

[[device.point]]
id = \"plant.pump1.running\"
topic = \"plant/pump1/running\"
";

async fn start(text: &str) -> App {
    let config = adit_config::load_str(text, "mqtt.toml").unwrap();
    App::start(&config, HttpBind::BestEffort).await.unwrap()
}

/// adit is connected and the broker confirmed its subscriptions (SUBACK):
/// from now on nothing published is missed.
async fn connected(app: &App) {
    wait_for(
        Duration::from_secs(30),
        "adit subscribed at the broker",
        || metric(app, "adit_mqtt_subscribed", &[("device", "edge")]) == 1.0,
    )
    .await;
}

fn sp(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_790_000_000_000),
        metrics,
        seq,
        uuid: None,
        body: None,
    }
    .encode_to_vec()
}

fn aliased(alias: u64, v: f64, ts_ms: u64) -> Metric {
    let mut m = Metric::new("", Some(alias), datatype::DOUBLE, MetricValue::Double(v));
    m.name = None;
    m.timestamp = Some(ts_ms);
    m
}

fn live_state(app: &App, name: &str) -> Option<(Option<Value>, Quality)> {
    let id = app.registry().id_of(name)?;
    let live = app.live();
    let g = live.lock().unwrap();
    g.get(id).map(|s| (s.value.clone(), s.quality))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_sparkplug_readings_arrive_with_values_and_timestamps_a_death_turns_them_bad_and_a_gap_asks_for_a_rebirth(
) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let app = start(&config_text(dir.path(), port, SUBSCRIPTIONS)).await;
    connected(&app).await;
    let (ncmd, _sub) = subscribe(port, "spBv1.0/t/NCMD/#").await;
    let publisher = Publisher::connect(port, "test-pub-1");

    let now_ms = (Timestamp::now().as_micros() / 1000) as u64;
    let t1 = Timestamp((now_ms as i64 - 10_000) * 1000);
    publisher
        .publish(
            "tunnel/north/sensors/co",
            format!("{{\"value\": 12.5, \"ts\": \"{}\"}}", t1.to_rfc3339()),
        )
        .await;
    publisher
        .publish(
            "tunnel/south/sensors/no2",
            format!("{{\"value\": 0.4, \"ts\": {}}}", now_ms - 9000),
        )
        .await;
    publisher.publish("plant/pump1/running", "true").await;
    // Sparkplug: birth of node n1 and device d1, data, a gap, a death.
    let birth = vec![Metric::new(
        "bdSeq",
        None,
        datatype::INT64,
        MetricValue::Long(1),
    )];
    publisher
        .publish("spBv1.0/t/NBIRTH/n1", sp(Some(0), birth.clone()))
        .await;
    let mut co = Metric::new("CO", Some(1), datatype::DOUBLE, MetricValue::Double(3.0));
    co.timestamp = Some(now_ms - 8000);
    publisher
        .publish("spBv1.0/t/DBIRTH/n1/d1", sp(Some(1), vec![co]))
        .await;
    publisher
        .publish(
            "spBv1.0/t/DDATA/n1/d1",
            sp(Some(2), vec![aliased(1, 4.0, now_ms - 7000)]),
        )
        .await;

    let db = dir.path().join("readings.db");
    wait_for(
        Duration::from_secs(20),
        "JSON, plain and Sparkplug rows in SQLite",
        || {
            rows(&db, "north.co").len() == 1
                && rows(&db, "south.no2").len() == 1
                && rows(&db, "plant.pump1.running").len() == 1
                && rows(&db, "t/n1/d1/CO").len() == 2
        },
    )
    .await;
    let co = rows(&db, "north.co");
    assert_eq!(co[0].0, Some(12.5));
    assert_eq!(
        co[0].1,
        t1.to_rfc3339(),
        "the payload's own timestamp is stored"
    );
    assert_eq!(co[0].2, "good");
    assert_eq!(rows(&db, "south.no2")[0].0, Some(0.4));
    assert_eq!(
        rows(&db, "south.no2")[0].1,
        Timestamp((now_ms as i64 - 9000) * 1000).to_rfc3339()
    );
    assert_eq!(rows(&db, "plant.pump1.running")[0].0, Some(1.0));
    let sp_rows = rows(&db, "t/n1/d1/CO");
    assert_eq!((sp_rows[0].0, sp_rows[1].0), (Some(3.0), Some(4.0)));
    assert_eq!(
        sp_rows[1].1,
        Timestamp((now_ms as i64 - 7000) * 1000).to_rfc3339()
    );
    assert_eq!(
        live_state(&app, "t/n1/d1/CO").unwrap(),
        (Some(Value::F64(4.0)), Quality::Good)
    );

    // A gap in seq (2 → 9): a rebirth request on NCMD.
    publisher
        .publish(
            "spBv1.0/t/DDATA/n1/d1",
            sp(Some(9), vec![aliased(1, 5.0, now_ms - 6000)]),
        )
        .await;
    wait_for(Duration::from_secs(10), "an NCMD rebirth request", || {
        ncmd.lock().unwrap().iter().any(|(topic, payload)| {
            topic == "spBv1.0/t/NCMD/n1"
                && Payload::decode(payload.as_slice()).is_ok_and(|p| {
                    p.metrics.iter().any(|m| {
                        m.name.as_deref() == Some("Node Control/Rebirth")
                            && m.value == Some(MetricValue::Boolean(true))
                    })
                })
        })
    })
    .await;
    assert!(
        metric(
            &app,
            "adit_mqtt_rejected_total",
            &[("reason", "sequence_gap")]
        ) >= 1.0
    );

    // NDEATH with the birth's bdSeq: Bad(CommFailure), last value kept.
    publisher
        .publish("spBv1.0/t/NDEATH/n1", sp(None, birth))
        .await;
    wait_for(
        Duration::from_secs(10),
        "the dead node's point bad(comm_failure)",
        || {
            live_state(&app, "t/n1/d1/CO")
                == Some((Some(Value::F64(5.0)), Quality::Bad(Reason::CommFailure)))
        },
    )
    .await;
    println!(
        "figures: acked by broker {}, messages counted by adit {}",
        publisher.acked(),
        metric(&app, "adit_mqtt_messages_total", &[])
    );
    assert!(app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_message_is_rejected_counted_under_its_reason_and_the_collector_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let app = start(&config_text(dir.path(), port, SUBSCRIPTIONS)).await;
    connected(&app).await;
    let publisher = Publisher::connect(port, "test-pub-2");
    // Each message its own time: two samples of one point at one time are
    // one storage key (the first stored wins).
    let t0 = Timestamp::now();
    let ts = |i: u64| t0.saturating_add(Duration::from_millis(i)).to_rfc3339();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "tunnel/a/sensors/x",
            b"{\"value\": 1".to_vec(),
            "malformed_json",
        ),
        (
            "tunnel/a/sensors/x",
            format!("{{\"ts\": \"{}\"}}", ts(1)).into_bytes(),
            "missing_field",
        ),
        (
            "tunnel/a/sensors/x",
            format!("{{\"value\": [1], \"ts\": \"{}\"}}", ts(2)).into_bytes(),
            "wrong_type",
        ),
        (
            "tunnel/a/sensors/x",
            format!("{{\"value\": \"NaN\", \"ts\": \"{}\"}}", ts(3)).into_bytes(),
            "not_a_number",
        ),
        (
            "tunnel/a/sensors/y",
            b"{\"value\": 1, \"ts\": 0}".to_vec(),
            "timestamp_implausible",
        ),
        (
            "tunnel/a/sensors/z",
            b"{\"value\": 1, \"ts\": \"2300-01-01T00:00:00Z\"}".to_vec(),
            "timestamp_implausible",
        ),
        ("tunnel/a/sensors/x", vec![b' '; 10 << 20], "too_large"),
        (
            "plant/pump1/running",
            vec![0xff, 0xfe, 0x00],
            "invalid_utf8",
        ),
        (
            "spBv1.0/t/DDATA/nx/d1",
            sp(Some(1), vec![aliased(7, 1.0, 1)]),
            "not_born",
        ),
        ("spBv1.0/t/NDATA/ny", vec![0xff; 64], "sparkplug_decode"),
    ];
    for (topic, payload, _) in &cases {
        publisher.publish(topic, payload.clone()).await;
    }
    // Then a good message: it arrives, so nothing above stopped the collector.
    publisher
        .publish(
            "tunnel/a/sensors/x",
            format!("{{\"value\": 42, \"ts\": \"{}\"}}", ts(4)),
        )
        .await;
    let db = dir.path().join("readings.db");
    wait_for(
        Duration::from_secs(30),
        "the good message after the bad ones",
        || rows(&db, "a.x").iter().any(|r| r.0 == Some(42.0)),
    )
    .await;
    for (_, _, reason) in &cases {
        let n = metric(&app, "adit_mqtt_rejected_total", &[("reason", reason)]);
        println!("rejected {reason}: {n}");
        assert!(n >= 1.0, "{reason} not counted");
    }
    // The bad ones are flagged, not silently dropped: a.x has bad rows, the
    // 1970 and 2300 samples are stored as bad(clock_invalid).
    let ax = rows(&db, "a.x");
    assert!(ax.iter().filter(|r| r.2 == "bad").count() >= 3, "{ax:?}");
    assert_eq!(rows(&db, "a.y")[0].3.as_deref(), Some("clock_invalid"));
    assert_eq!(rows(&db, "a.z")[0].3.as_deref(), Some("clock_invalid"));
    // ... and stored now (at their receive time), not in 1970 or 2300
    // where nobody looking at the recent history would see them.
    let now_us = Timestamp::now().0;
    for point in ["a.y", "a.z"] {
        let stored = rows_us(&db, point)[0].1;
        println!(
            "{point} stored {} s from now",
            (stored - now_us) / 1_000_000
        );
        assert!(
            (stored - now_us).abs() < 600_000_000,
            "{point} stored at {stored} µs"
        );
    }
    // Every message was acknowledged to the broker (none redelivered forever).
    wait_for(
        Duration::from_secs(10),
        "every message acknowledged",
        || metric(&app, "adit_mqtt_acks_total", &[("outcome", "sent")]) >= (cases.len() + 1) as f64,
    )
    .await;
    // The audit log is written by its own thread: read it after the stop.
    assert!(app.shutdown().await);
    let audit = adit_audit::read_entries(&dir.path().join("audit")).unwrap_or_default();
    assert!(
        audit
            .iter()
            .any(|e| e.to_string().contains("mqtt_message_rejected")),
        "rejections are audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_without_a_time_of_their_own_is_stored_whole() {
    // Plain payloads carry no time: each message's receive time is its
    // storage key's, and messages read in one turn must not share one.
    const N: i64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let app = start(&config_text(dir.path(), port, SUBSCRIPTIONS)).await;
    connected(&app).await;
    let publisher = Publisher::connect(port, "test-pub-burst");
    for i in 0..N {
        let payload = if i % 2 == 0 { "1" } else { "0" };
        publisher.publish("plant/pump1/running", payload).await;
    }
    wait_for(
        Duration::from_secs(60),
        "the broker acked the burst",
        || publisher.acked() >= N as u64,
    )
    .await;
    let db = dir.path().join("readings.db");
    let rows = || {
        count(
            &db,
            "SELECT count(*) FROM readings_view WHERE point = 'plant.pump1.running' AND quality = 'good'",
        )
    };
    wait_for(Duration::from_secs(60), "a row per message", || rows() >= N).await;
    println!("burst: published {N}, rows {}", rows());
    assert_eq!(rows(), N);
    assert!(app.shutdown().await);
}

/// A publisher whose stamps are coarser than its rate (seconds, several
/// samples a second) sends different values under one time: each is a row
/// of its own; the same message again is not. Before, the storage key
/// (point, time, time) kept one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_samples_under_one_timestamp_are_all_stored_and_a_repeat_once() {
    const N: i64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let app = start(&config_text(dir.path(), port, SUBSCRIPTIONS)).await;
    connected(&app).await;
    let publisher = Publisher::connect(port, "test-pub-same-time");
    let ts_ms = adit_core::Timestamp::now().as_micros() / 1_000_000 * 1000;
    let payload = |v: i64| format!("{{\"value\": {v}, \"ts\": {ts_ms}}}");
    for v in 0..N {
        publisher
            .publish("tunnel/same/sensors/co", payload(v))
            .await;
    }
    // The first message again (a publisher's retry, a redelivery).
    publisher
        .publish("tunnel/same/sensors/co", payload(0))
        .await;
    wait_for(Duration::from_secs(60), "the broker acked all", || {
        publisher.acked() > N as u64
    })
    .await;
    let db = dir.path().join("readings.db");
    let rows = || {
        count(
            &db,
            "SELECT count(*) FROM readings_view WHERE point = 'same.co' AND quality = 'good'",
        )
    };
    wait_for(Duration::from_secs(60), "a row per distinct sample", || {
        rows() >= N
    })
    .await;
    // Whatever is still on its way has arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let distinct = count(
        &db,
        "SELECT count(DISTINCT value) FROM readings_view WHERE point = 'same.co'",
    );
    println!(
        "one timestamp: published {N} values + 1 repeat, rows {}, distinct values {distinct}",
        rows()
    );
    assert_eq!(distinct, N);
    assert_eq!(rows(), N, "the repeat is stored once");
    assert!(app.shutdown().await);
}

/// Publishes `n` messages, one per ms of a base time, on ten topics; each
/// carries its own timestamp (so a redelivery dedups).
async fn publish_numbered(
    publisher: &Publisher,
    base_ms: i64,
    range: std::ops::Range<i64>,
    pace: Duration,
) {
    for i in range {
        publisher
            .publish(
                &format!("tunnel/load/sensors/s{}", i % 10),
                format!("{{\"value\": {i}, \"ts\": {}}}", base_ms + i),
            )
            .await;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_broker_restart_with_a_persistent_session_loses_no_qos1_message() {
    const N: i64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let opts = MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    };
    let mut broker = Mosquitto::start_with(dir.path(), port, &opts);
    let app = start(&config_text(dir.path(), port, SUBSCRIPTIONS)).await;
    connected(&app).await;
    let publisher = Publisher::connect(port, "test-pub-3");
    let base = Timestamp::now().as_micros() / 1000 - 60_000;
    publish_numbered(&publisher, base, 0..N / 2, Duration::from_micros(500)).await;
    let connects_before = metric(&app, "adit_mqtt_connects_total", &[("outcome", "ok")]);
    let restarted = Instant::now();
    broker.restart_graceful();
    let db = dir.path().join("readings.db");
    // The second half goes to the broker while adit may still be away: the
    // persistent session queues it.
    let ((), reconnected) = tokio::join!(
        publish_numbered(&publisher, base, N / 2..N, Duration::from_micros(500)),
        wait_for(Duration::from_secs(30), "adit connected again", || {
            metric(&app, "adit_mqtt_connects_total", &[("outcome", "ok")]) > connects_before
        }),
    );
    wait_for(
        Duration::from_secs(60),
        "every message the broker acknowledged",
        || publisher.acked() >= N as u64,
    )
    .await;
    let distinct_stored = || {
        count(
            &db,
            "SELECT count(DISTINCT value) FROM readings_view WHERE point LIKE 'load.%' AND quality = 'good'",
        )
    };
    wait_for(
        Duration::from_secs(60),
        "every acknowledged message in SQLite",
        || distinct_stored() >= N,
    )
    .await;
    let all_stored = restarted.elapsed();
    let good_rows = count(
        &db,
        "SELECT count(*) FROM readings_view WHERE point LIKE 'load.%' AND quality = 'good'",
    );
    let comm_failure_marks = count(
        &db,
        "SELECT count(*) FROM readings_view WHERE point LIKE 'load.%' AND reason = 'comm_failure'",
    );
    println!(
        "figures: published {N}, acked by broker {}, stored distinct {}, good rows {good_rows}, \
         comm-failure marks {comm_failure_marks}, redelivered {}, resubscribes {}; \
         restart → adit connected again {reconnected:?}, restart → all {N} stored {all_stored:?}",
        publisher.acked(),
        distinct_stored(),
        metric(&app, "adit_mqtt_redelivered_total", &[]),
        metric(&app, "adit_mqtt_resubscribes_total", &[]),
    );
    assert_eq!(distinct_stored(), N);
    assert_eq!(
        good_rows, N,
        "a redelivery is the same storage key, stored once"
    );
    assert_eq!(
        metric(&app, "adit_mqtt_resubscribes_total", &[]),
        0.0,
        "the persistent session survived the restart"
    );
    assert!(
        comm_failure_marks >= 1,
        "the link loss marked the points Bad(CommFailure)"
    );
    assert!(app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_hard_loses_the_session_and_adit_subscribes_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port);
    let app = start(&config_text(dir.path(), port, SUBSCRIPTIONS)).await;
    connected(&app).await;
    let db = dir.path().join("readings.db");
    {
        let publisher = Publisher::connect(port, "test-pub-4");
        publisher
            .publish(
                "tunnel/k/sensors/co",
                format!(
                    "{{\"value\": 1, \"ts\": \"{}\"}}",
                    Timestamp::now().to_rfc3339()
                ),
            )
            .await;
        wait_for(Duration::from_secs(20), "the first value", || {
            rows(&db, "k.co").len() == 1
        })
        .await;
    }
    broker.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restart = Instant::now();
    broker.start_again();
    // The broker forgot the session: only a new SUBSCRIBE brings data.
    let publisher = Publisher::connect(port, "test-pub-4b");
    let mut sent = 2;
    let resumed = loop {
        publisher
            .publish(
                "tunnel/k/sensors/co",
                format!(
                    "{{\"value\": {sent}, \"ts\": \"{}\"}}",
                    Timestamp::now().to_rfc3339()
                ),
            )
            .await;
        sent += 1;
        if rows(&db, "k.co").iter().filter(|r| r.0.is_some()).count() > 1 {
            break restart.elapsed();
        }
        assert!(
            restart.elapsed() < Duration::from_secs(30),
            "no value after the broker lost the session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resubscribed = metric(
        &app,
        "adit_mqtt_resubscribes_total",
        &[("reason", "session_lost")],
    );
    println!("figures: broker start → first fresh value {resumed:?} (reconnect_max 500 ms), resubscribes {resubscribed}");
    assert!(resubscribed >= 1.0);
    assert!(app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_sent_again_and_its_points_go_stale() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let device = "[[device.subscription]]\nfilter = \"quiet/+\"\ntemplate = \"quiet/{s}\"\nexpect_every = \"200ms\"\n";
    let app = start(&config_text(dir.path(), port, device)).await;
    connected(&app).await;
    let publisher = Publisher::connect(port, "test-pub-5");
    publisher
        .publish(
            "quiet/a",
            format!(
                "{{\"value\": 1, \"ts\": \"{}\"}}",
                Timestamp::now().to_rfc3339()
            ),
        )
        .await;
    wait_for(Duration::from_secs(10), "the first value", || {
        live_state(&app, "a").is_some()
    })
    .await;
    wait_for(
        Duration::from_secs(10),
        "a resubscribe after 3 silent periods",
        || {
            metric(
                &app,
                "adit_mqtt_resubscribes_total",
                &[("reason", "silence")],
            ) >= 1.0
        },
    )
    .await;
    let id = app.registry().id_of("a").unwrap();
    wait_for(Duration::from_secs(10), "the silent point stale", || {
        app.live().lock().unwrap().is_stale(id)
    })
    .await;
    // After 3 more silent periods the whole client is rebuilt, and data still flows.
    wait_for(Duration::from_secs(10), "a rebuilt client", || {
        metric(&app, "adit_mqtt_connects_total", &[("outcome", "ok")]) >= 2.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher
        .publish(
            "quiet/a",
            format!(
                "{{\"value\": 2, \"ts\": \"{}\"}}",
                Timestamp::now().to_rfc3339()
            ),
        )
        .await;
    wait_for(
        Duration::from_secs(10),
        "a fresh value after the rebuild",
        || live_state(&app, "a").is_some_and(|(v, q)| v == Some(Value::I64(2)) && q.is_good()),
    )
    .await;
    assert!(app.shutdown().await);
}
