//! kill -9 at random moments under load (20 times in CI; `ADIT_KILL9_RUNS=100`
//! for the benchmark-style run), then a clean run: every reading adit
//! accepted is in both sinks, nothing is stored twice, and duplicates are
//! counted.
//!
//! Ground truth, from outside adit: the simulator's poll sequence register
//! (`SEQUENCE_ADDRESS`: the n-th read answers n) says how many polls were
//! served; every served value must be stored exactly once in SQLite, except
//! the few a kill caught between the device's answer and the spool append
//! (never accepted: bounded per kill, printed). Kills land anywhere, also in
//! the first milliseconds of a start (recovery of a spool holding a backlog,
//! replay to the sinks).
//!
//! Second ground truth: during the first half of the kills the database is
//! down (connection refused), so the QuestDB cursor acknowledges nothing and
//! every record adit accepted stays in the spool; the test reads them there
//! (with a cursor of its own) while adit is stopped. During the second half
//! the database is up, so kills also land between a write and its
//! acknowledgement (the duplicate path). After a final clean run, both sinks
//! must hold every such reading and exactly the same set as each other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::format_push_string
)]

mod support_adit;
mod support_vm;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use adit_core::Reason;
use adit_sim_modbus::Simulator;
use support_adit::Adit;
use support_vm::{free_port, http, sqlite_rows, VictoriaMetrics};

fn config_text(data: &Path, sim: SocketAddr, db_port: u16, http_port: u16) -> String {
    let mut text = format!(
        r#"site = "kill9"
data_dir = "{data}"
[http]
listen = "127.0.0.1:{http_port}"
[spool]
segment_size = "128 KiB"
[sink.sqlite]
batch_max_delay = "50ms"
[sink.questdb]
conf = "http::addr=127.0.0.1:{db_port};protocol_version=1;request_timeout=3000;retry_timeout=500;"
batch_max_delay = "50ms"
"#,
        data = data.display()
    );
    for unit in [1u8, 2] {
        text.push_str(&format!(
            "[[device]]\nid = \"bore{unit}\"\nprotocol = \"modbus_tcp\"\naddress = \"{sim}\"\nunit_id = {unit}\npoll_interval = \"50ms\"\ntimeout = \"500ms\"\n"
        ));
        if unit == 1 {
            text.push_str(&format!(
                "[[device.point]]\nid = \"b1.seq\"\ntable = \"holding\"\naddress = {}\ntype = \"u32\"\n",
                adit_sim_modbus::SEQUENCE_ADDRESS
            ));
        }
        for (name, table, address, ty) in [
            ("co_1", "holding", 0, "f32"),
            ("co_2", "holding", 2, "f32"),
            ("no2", "holding", 4, "u16"),
            ("velocity", "holding", 6, "i16"),
            ("temperature", "holding", 7, "i16"),
            ("energy", "input", 0, "u32"),
            ("sump", "input", 2, "f32"),
        ] {
            text.push_str(&format!("[[device.point]]\nid = \"b{unit}.{name}\"\ntable = \"{table}\"\naddress = {address}\ntype = \"{ty}\"\n"));
        }
    }
    text
}

fn metric(http_port: u16, name: &str) -> Option<f64> {
    let body = http(http_port, "GET", "/metrics", "")?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Everything in the spool, read with a cursor of the test's own.
fn spooled(config: &adit_config::Config) -> HashSet<(String, i64)> {
    let (registry, _) = adit::app::build_registry(config).unwrap();
    let cfg = adit_spool::SpoolConfig {
        dir: config.spool.dir.clone(),
        segment_bytes: config.spool.segment_size,
        max_bytes: config.spool.max_size,
        when_full: adit_spool::WhenFull::Block,
        fsync: adit_spool::FsyncPolicy::Never,
        faults: None,
    };
    let (spool, _) =
        adit_spool::Spool::open(cfg, &registry, &["sqlite", "questdb", "kill9-test"]).unwrap();
    let mut reader = spool.reader("kill9-test", &registry);
    let mut out = HashSet::new();
    loop {
        let d = reader.next(100_000, Duration::ZERO).unwrap();
        if d.records == 0 {
            return out;
        }
        for r in d.readings {
            let ts = if r.quality.reason() == Some(Reason::ClockInvalid) {
                r.received_ts
            } else {
                r.source_ts
            };
            out.insert((
                registry.get(r.point).unwrap().name.to_string(),
                ts.as_micros() / 1000,
            ));
        }
    }
}

/// The sequence values stored in SQLite for `b1.seq`, with their row count.
fn stored_sequence(db: &Path) -> (HashSet<u32>, usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let values: Vec<u32> = conn
        .prepare("SELECT value FROM readings_view WHERE point = 'b1.seq' AND value IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u32)
        .collect();
    let rows = values.len();
    (values.into_iter().collect(), rows)
}

/// A random moment to kill: a third of the kills in the first 150 ms (start,
/// spool recovery, replay), the rest anywhere in 0.3-1.2 s.
fn kill_delay() -> Duration {
    if fastrand::u8(0..3) == 0 {
        Duration::from_millis(fastrand::u64(5..150))
    } else {
        Duration::from_millis(300 + fastrand::u64(0..900))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_nines_under_load_lose_no_accepted_reading() {
    let runs: usize = std::env::var("ADIT_KILL9_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(2);
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1, 2])
        .await
        .unwrap();
    let db_port = free_port();
    let http_port = free_port();
    let data = dir.path().join("adit");
    let config_path = dir.path().join("kill9.toml");
    std::fs::write(
        &config_path,
        config_text(&data, sim.addr(), db_port, http_port),
    )
    .unwrap();
    let config = adit_config::load_file(&config_path).unwrap();

    // Phase A: database down; everything accepted stays in the spool. The
    // random delays can all come out short (CI once drew ten that added up
    // to 1.4 s, too little load to prove anything), so the last run of the
    // phase tops the phase's running time up to at least 5 s.
    let phase_a_min = Duration::from_secs(5);
    let mut phase_a_time = Duration::ZERO;
    for run in 0..runs / 2 {
        let mut delay = kill_delay();
        if run + 1 == runs / 2 {
            delay = delay.max(phase_a_min.saturating_sub(phase_a_time));
        }
        phase_a_time += delay;
        let mut adit = Adit::spawn(&config_path);
        tokio::time::sleep(delay).await;
        adit.kill9();
    }
    let truth = spooled(&config);
    assert!(
        truth.len() > 500,
        "the load must have produced readings: {} in {phase_a_time:?} of running",
        truth.len()
    );

    // Phase B: database up; kills land anywhere, including between a write and its ack.
    let mut vm = VictoriaMetrics::start_on(&dir.path().join("vm"), db_port);
    for _ in runs / 2..runs {
        let mut adit = Adit::spawn(&config_path);
        tokio::time::sleep(kill_delay()).await;
        adit.kill9();
    }

    // Final clean run: drain, then stop gracefully.
    let mut adit = Adit::spawn(&config_path);
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if start.elapsed() > Duration::from_secs(3)
            && metric(http_port, "adit_spool_pending_records") == Some(0.0)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the spool did not drain"
        );
    }
    let status = adit.stop();
    assert!(status.success(), "graceful stop after the loop: {status:?}");

    // The simulator's count of polls served against what SQLite holds.
    let served = sim.sequence(1).unwrap();
    let (stored_seq, seq_rows) = stored_sequence(&data.join("readings.db"));
    let never_accepted = (1..=served).filter(|v| !stored_seq.contains(v)).count();
    let phantom = stored_seq.iter().filter(|&&v| v == 0 || v > served).count();
    println!(
        "kill -9 × {runs}: simulator served {served} sequence polls; SQLite holds {} distinct in {seq_rows} rows; not stored {never_accepted} ({:.2} per kill, caught between answer and spool)",
        stored_seq.len(),
        never_accepted as f64 / runs as f64
    );
    assert_eq!(seq_rows, stored_seq.len(), "a poll stored twice in SQLite");
    assert_eq!(phantom, 0, "values the simulator never served");
    assert!(
        never_accepted <= runs * 5 + 5,
        "{never_accepted} served polls missing after {runs} kills: more than the readings in flight"
    );

    let in_vm = vm.samples();
    vm.stop();
    let vm_set: HashSet<(String, i64)> = in_vm.keys().cloned().collect();
    let in_sqlite: HashSet<(String, i64)> =
        sqlite_rows(&data.join("readings.db")).into_iter().collect();
    let duplicates: u32 = in_vm.values().map(|n| n - 1).sum();
    let lost_vm = truth.difference(&vm_set).count();
    let lost_sqlite = truth.difference(&in_sqlite).count();
    println!(
        "kill -9 × {runs}: accepted during the first {} kills {} (spool ground truth); stored: sqlite {}, victoriametrics {} distinct; lost: vm {lost_vm}, sqlite {lost_sqlite}; duplicates in vm {duplicates} (VictoriaMetrics keeps replays; QuestDB's DEDUP keys absorb them)",
        runs / 2,
        truth.len(),
        in_sqlite.len(),
        vm_set.len()
    );
    assert_eq!(lost_vm, 0, "accepted readings missing in VictoriaMetrics");
    assert_eq!(lost_sqlite, 0, "accepted readings missing in SQLite");
    let only_vm: Vec<_> = vm_set.difference(&in_sqlite).take(3).collect();
    let only_sqlite: Vec<_> = in_sqlite.difference(&vm_set).take(3).collect();
    assert!(
        only_vm.is_empty() && only_sqlite.is_empty(),
        "sinks differ: only in VM {only_vm:?}, only in SQLite {only_sqlite:?}"
    );
}
