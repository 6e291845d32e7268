//! Nothing lost, nothing hidden, end to end against the simulator and real
//! databases (SQLite; a line-protocol endpoint whose answers the test
//! controls): distinct samples never collapse, a failing sink is seen while
//! another is healthy, outages never become quarantine, a real rejection is
//! quarantined and re-delivered by `adit spool quarantine retry`, and a full
//! spool under `block` never hangs shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::format_push_string
)]

mod support_http;
mod support_vm;
mod support_wait;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_sim_modbus::{Simulator, UnitSpec, SEQUENCE_ADDRESS};
use support_http::{webhook, Answer, IlpServer};
use support_vm::{free_port, http};
use support_wait::wait_for;

fn sqlite_count(db: &Path, point: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT count(*) FROM readings_view WHERE point = ?1",
        [point],
        |r| r.get(0),
    )
    .unwrap()
}

/// One device with a poll sequence point and a CO point.
fn device(sim: SocketAddr, interval: &str, clock: bool) -> String {
    let mut text = format!(
        "[[device]]\nid = \"plc1\"\nprotocol = \"modbus_tcp\"\naddress = \"{sim}\"\nunit_id = 1\npoll_interval = \"{interval}\"\ntimeout = \"500ms\"\n\
         [[device.point]]\nid = \"seq\"\ntable = \"holding\"\naddress = {SEQUENCE_ADDRESS}\ntype = \"u32\"\n\
         [[device.point]]\nid = \"co\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\nunit = \"ppm\"\n"
    );
    if clock {
        // A PLC clock with one-second resolution (as in config/tunnel-site.toml).
        text.push_str(
            "[device.clock]\ntable = \"holding\"\naddress = 900\ntype = \"u32\"\nunit = \"s\"\n",
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_resolution_clock_keeps_every_poll() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1])
        .await
        .unwrap();
    let text = format!(
        "site = \"clock\"\ndata_dir = \"{}\"\n[http]\nlisten = \"off\"\n[sink.sqlite]\nbatch_max_delay = \"50ms\"\n{}",
        dir.path().display(),
        device(sim.addr(), "200ms", true)
    );
    let config = adit_config::load_str(&text, "clock.toml").unwrap();
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let db = dir.path().join("readings.db");
    wait_for(Duration::from_secs(30), "25 polls", || {
        sim.sequence(1).unwrap_or(0) >= 25
    })
    .await;
    assert!(app.shutdown().await, "drained");
    let polls = i64::from(sim.sequence(1).unwrap());
    // Rows with a value (a stale marker, should a slow start or a stall
    // bring one, carries none): each is one poll's sequence number.
    let (rows, distinct, lowest, highest, distinct_ts): (i64, i64, i64, i64, i64) =
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT count(*), count(DISTINCT r.value), min(r.value), max(r.value), count(DISTINCT r.ts) \
                 FROM readings r JOIN points p ON p.id = r.point_id \
                 WHERE p.name = 'seq' AND r.value IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
    println!("one-second device clock polled every 200 ms: {polls} polls served, {rows} rows stored (sequence {lowest}..={highest}), {distinct_ts} distinct device times");
    assert_eq!(rows, distinct, "no poll stored twice");
    assert_eq!(
        lowest, 1,
        "the first poll is stored (the n-th read answers n)"
    );
    assert_eq!(
        highest - lowest + 1,
        rows,
        "no poll between the first and the last is missing"
    );
    // Shutdown may cancel the poll in flight after the simulator served it.
    assert!(
        (polls - 1..=polls).contains(&rows),
        "every poll is a row: {rows} rows for {polls} polls"
    );
    assert!(
        distinct_ts < rows,
        "the device clock repeats within a second: {distinct_ts} distinct times for {rows} rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_alerted_while_another_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1])
        .await
        .unwrap();
    let ilp = IlpServer::start(Answer::Unavailable);
    let (hook_port, hooks) = webhook().await;
    let http_port = free_port();
    let text = format!(
        "site = \"two-sinks\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [sink.questdb]\nconf = \"http::addr=127.0.0.1:{port};protocol_version=1;retry_timeout=100;request_timeout=1000;\"\nbatch_max_delay = \"50ms\"\n\
         [alerting]\nwebhook = [\"http://127.0.0.1:{hook_port}/hook\"]\nresend_interval = \"1s\"\n\
         [alerting.self_health]\nsink_failing_for = \"1s\"\n{dev}",
        data = dir.path().display(),
        port = ilp.port,
        dev = device(sim.addr(), "100ms", false)
    );
    let config = adit_config::load_str(&text, "two-sinks.toml").unwrap();
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let addr = app.http_addr.unwrap();
    let firing = |bodies: &[String]| {
        bodies.iter().any(|b| {
            serde_json::from_str::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "AditSinkFailing"
                        && a["labels"]["sink"] == "questdb"
                        && a["endsAt"].is_null()
                })
        })
    };
    let detected = wait_for(
        Duration::from_secs(30),
        "AditSinkFailing{sink=questdb} at the webhook",
        || firing(&hooks.lock().unwrap()),
    )
    .await;
    // SQLite is healthy the whole time, and still adit is not ready.
    assert!(sqlite_count(&dir.path().join("readings.db"), "seq") > 0);
    let ready = http(addr.port(), "GET", "/readyz", "").unwrap();
    let body: serde_json::Value = serde_json::from_str(ready.trim()).unwrap();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["questdb"]), "{body}");
    assert!(
        body["sinks"][1]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{body}"
    );
    let metrics = http(addr.port(), "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("adit_sink_queue_rows{sink=\"questdb\"}"),
        "sink-labelled queue metric"
    );
    println!(
        "failing sink detected: AditSinkFailing{{sink=\"questdb\"}} at the webhook {:.2} s after start (threshold sink_failing_for = 1 s) while SQLite kept storing",
        detected.as_secs_f64()
    );
    // The database comes back: ready again.
    ilp.set(Answer::Accept);
    wait_for(Duration::from_secs(30), "ready again", || {
        http(addr.port(), "GET", "/readyz", "").is_some_and(|b| b.contains("\"ready\":true"))
    })
    .await;
    assert!(app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_outage_loses_nothing_and_quarantines_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1])
        .await
        .unwrap();
    let ilp = IlpServer::start(Answer::Accept);
    let text = format!(
        "site = \"outage\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [sink.questdb]\nconf = \"http::addr=127.0.0.1:{port};protocol_version=1;retry_timeout=200;request_timeout=500;\"\nbatch_max_rows = 4\nbatch_max_delay = \"50ms\"\n{dev}",
        data = dir.path().display(),
        port = ilp.port,
        dev = device(sim.addr(), "50ms", false)
    );
    let config = adit_config::load_str(&text, "outage.toml").unwrap();
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let queue = app.metrics.sink_queue_rows.with_label_values(&["questdb"]);
    // The most readings the questdb stage held, sampled every 10 ms for `d`.
    let most_held = |d: Duration| {
        let q = queue.clone();
        async move {
            let (until, mut most) = (Instant::now() + d, 0);
            while Instant::now() < until {
                most = most.max(q.get());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            most
        }
    };
    let mut max_held = most_held(Duration::from_millis(500)).await;
    ilp.set(Answer::Unavailable); // 503 from a proxy or a restarting database
    max_held = max_held.max(most_held(Duration::from_secs(3)).await);
    ilp.set(Answer::Hang); // requests time out
    max_held = max_held.max(most_held(Duration::from_secs(2)).await);
    ilp.set(Answer::Accept);
    let spool = app.spool().clone();
    wait_for(
        Duration::from_secs(60),
        "the questdb cursor to catch up",
        || spool.pending_records() == 0,
    )
    .await;
    let m = app.metrics.clone();
    assert!(app.shutdown().await, "drained");
    let retryable = m.counter_sum(
        "adit_sink_errors_total",
        &[("sink", "questdb"), ("kind", "retryable")],
    );
    let permanent = m.counter_sum("adit_sink_errors_total", &[("kind", "permanent")]);
    let quarantined = m.counter_sum(
        "adit_sink_readings_dropped_total",
        &[("reason", "quarantined")],
    );
    let quarantine_files =
        std::fs::read_dir(dir.path().join("spool/quarantine")).map_or(0, Iterator::count);
    let db = dir.path().join("readings.db");
    let in_sqlite: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    let (distinct_lines, replayed) = ilp.stored();
    println!(
        "5 s outage (3 s of 503, 2 s of hung requests): {retryable} retried writes, {permanent} permanent, {quarantine_files} quarantine files; stored {distinct_lines} distinct lines ({replayed} replays) vs {in_sqlite} rows in SQLite; most held by the questdb stage {max_held} (batch_max_rows 4)"
    );
    assert!(retryable > 0.0, "the outage was seen");
    assert_eq!(permanent, 0.0, "an outage is never permanent");
    assert_eq!(quarantined, 0.0);
    assert_eq!(quarantine_files, 0);
    assert_eq!(
        distinct_lines as i64, in_sqlite,
        "every reading in both sinks"
    );
    assert!(
        max_held <= 4 + 8,
        "the stage held {max_held} readings: pending must stay bounded by batch_max_rows plus one record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_is_quarantined_alone_and_retry_redelivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1])
        .await
        .unwrap();
    let ilp = IlpServer::start(Answer::RejectRows);
    let text = format!(
        "site = \"reject\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [sink.questdb]\nconf = \"http::addr=127.0.0.1:{port};protocol_version=1;retry_timeout=100;\"\nbatch_max_delay = \"50ms\"\n{dev}",
        data = dir.path().display(),
        port = ilp.port,
        dev = device(sim.addr(), "100ms", false)
    );
    let config = adit_config::load_str(&text, "reject.toml").unwrap();
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let m = app.metrics.clone();
    wait_for(Duration::from_secs(30), "a quarantined batch", || {
        m.counter_sum(
            "adit_sink_readings_dropped_total",
            &[("sink", "questdb"), ("reason", "quarantined")],
        ) > 0.0
    })
    .await;
    ilp.set(Answer::Accept);
    wait_for(Duration::from_secs(30), "more batches stored", || {
        ilp.stored().0 >= 20
    })
    .await;
    let spool = app.spool().clone();
    wait_for(Duration::from_secs(30), "caught up", || {
        spool.pending_records() == 0
    })
    .await;
    drop(spool); // the spool directory's lock goes with its last handle
    assert!(app.shutdown().await);
    let quarantined = m.counter_sum(
        "adit_sink_readings_dropped_total",
        &[("reason", "quarantined")],
    ) as usize;
    let spool_dir = dir.path().join("spool");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_adit"))
        .args(["spool", "quarantine", "list"])
        .arg(&spool_dir)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&listed.stdout).to_string();
    println!("{list}");
    assert!(listed.status.success(), "{list}");
    assert!(
        list.contains("sink-questdb-") && list.contains("retryable"),
        "{list}"
    );
    let before = ilp.stored().0;
    let retried = std::process::Command::new(env!("CARGO_BIN_EXE_adit"))
        .args(["spool", "quarantine", "retry"])
        .arg(&spool_dir)
        .output()
        .unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    // The next start delivers them.
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    wait_for(Duration::from_secs(30), "the re-delivered batches", || {
        ilp.stored().0 >= before + quarantined
    })
    .await;
    assert!(app.shutdown().await);
    let in_sqlite: i64 = rusqlite::Connection::open(dir.path().join("readings.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    let (distinct_lines, _) = ilp.stored();
    println!("quarantined {quarantined} readings, retried: questdb now holds {distinct_lines} distinct lines, SQLite {in_sqlite} rows");
    assert_eq!(
        distinct_lines as i64, in_sqlite,
        "after the retry both sinks hold the same readings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_under_block_never_hangs_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start_tcp(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        adit_sim_modbus::Framing::Tcp,
        &[UnitSpec {
            bulk_registers: 100,
            ..UnitSpec::healthy(1)
        }],
    )
    .await
    .unwrap();
    let ilp = IlpServer::start(Answer::Unavailable);
    let mut text = format!(
        "site = \"block\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [spool]\nsegment_size = \"64 KiB\"\nmax_size = \"1 MiB\"\nwhen_full = \"block\"\n\
         [sink.sqlite]\nenabled = false\n\
         [sink.questdb]\nconf = \"http::addr=127.0.0.1:{port};protocol_version=1;retry_timeout=100;\"\n\
         [[device]]\nid = \"bulk\"\nprotocol = \"modbus_tcp\"\naddress = \"{sim}\"\nunit_id = 1\npoll_interval = \"20ms\"\n",
        data = dir.path().display(),
        port = ilp.port,
        sim = sim.addr()
    );
    for i in 0..100 {
        text.push_str(&format!(
            "[[device.point]]\nid = \"r{i}\"\ntable = \"holding\"\naddress = {}\n",
            adit_sim_modbus::BULK_START + i
        ));
    }
    let config = adit_config::load_str(&text, "block.toml").unwrap();
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let spool = app.spool().clone();
    wait_for(Duration::from_secs(60), "the spool to block", || {
        spool
            .stats()
            .block_waits
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    })
    .await;
    let m = app.metrics.clone();
    let t = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(60), app.shutdown()).await;
    let took = t.elapsed();
    let not_accepted = m.counter_sum(
        "adit_sink_readings_dropped_total",
        &[("sink", "spool"), ("reason", "spool_closed")],
    );
    println!("shutdown with the spool full under block: {:.1} s (drain timeout 10 s); {not_accepted} readings counted as not accepted", took.as_secs_f64());
    assert!(stopped.is_ok(), "shutdown hung");
    assert!(took < Duration::from_secs(40), "{took:?}");
}

/// Both writers of the QuestDB sink: adit's own (the connection strings it
/// serves) sizes its requests to `max_buf_size` from the start; questdb-rs
/// (here because of `auth_timeout`, a key adit's writer leaves to it)
/// refuses an oversized request, and the sink retries with smaller ones.
#[test]
fn a_buffer_limit_below_the_request_size_is_retried_with_smaller_requests() {
    use adit_core::{PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
    use adit_pipeline::{Sink, SinkError};
    for (extra, writer) in [("", "adit"), ("auth_timeout=15000;", "questdb-rs")] {
        let ilp = IlpServer::start(Answer::Accept);
        let mut registry = PointRegistry::new();
        registry
            .insert(PointMeta::plain("bore_a.co", "plc", 1000))
            .unwrap();
        let mut sink = adit_sink_questdb::QuestDbSink::new(
            adit_sink_questdb::Conf(format!(
                "http::addr=127.0.0.1:{};protocol_version=1;max_buf_size=65536;{extra}",
                ilp.port
            )),
            "readings".into(),
            std::sync::Arc::new(registry),
        );
        assert_eq!(sink.writer(), writer);
        let readings: Vec<Reading> = (0..5000)
            .map(|i| Reading {
                point: adit_core::PointId(0),
                value: Some(Value::F64(f64::from(i))),
                quality: Quality::Good,
                source_ts: Timestamp(1_700_000_000_000_000 + i64::from(i)),
                received_ts: Timestamp(1_700_000_000_000_000 + i64::from(i)),
            })
            .collect();
        let mut refusals = 0;
        loop {
            match sink.write(&readings) {
                Ok(n) => {
                    assert_eq!(n, 5000);
                    break;
                }
                Err(SinkError::Retryable(e)) => {
                    refusals += 1;
                    assert!(refusals < 10, "never fits: {e}");
                }
                Err(SinkError::Permanent(e)) => {
                    panic!("a buffer limit is not about the data: {e}")
                }
            }
        }
        let requests = ilp.requests.load(std::sync::atomic::Ordering::SeqCst);
        println!(
            "{writer} writer, max_buf_size 64 KiB: {refusals} refusals, then {requests} requests"
        );
        if writer == "adit" {
            assert_eq!(refusals, 0, "sized to the limit from the start");
        } else {
            assert!(refusals > 0, "questdb-rs refuses the 8 MiB request first");
        }
        assert!(requests >= 5, "{requests} requests for about 400 KB");
        assert_eq!(ilp.stored().0, 5000);
    }
}
