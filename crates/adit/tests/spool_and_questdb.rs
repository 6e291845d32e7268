//! The durable path end to end against a real line-protocol database
//! (VictoriaMetrics over ILP v1/HTTP, through questdb-rs): both sinks read one
//! spool, a database outage loses nothing, and kill -9 loses nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::format_push_string
)]

mod support_vm;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_sim_modbus::Simulator;
use support_vm::{sqlite_rows, VictoriaMetrics};

fn config_text(dir: &Path, sim: SocketAddr, vm_conf: &str, interval: &str, fsync: &str) -> String {
    let mut text = format!(
        r#"site = "durable"
data_dir = "{dir}"
[http]
listen = "off"
[spool]
fsync = "{fsync}"
segment_size = "256 KiB"
[sink.sqlite]
batch_max_delay = "100ms"
[sink.questdb]
conf = "{vm_conf}"
batch_max_delay = "100ms"
"#,
        dir = dir.display()
    );
    for unit in [1u8, 2] {
        text.push_str(&format!(
            "[[device]]\nid = \"bore{unit}\"\nprotocol = \"modbus_tcp\"\naddress = \"{sim}\"\nunit_id = {unit}\npoll_interval = \"{interval}\"\ntimeout = \"500ms\"\n"
        ));
        for (name, address, ty) in [
            ("co", 0, "f32"),
            ("no2", 4, "u16"),
            ("velocity", 6, "i16"),
            ("energy", 0, "u32"),
        ] {
            let table = if name == "energy" { "input" } else { "holding" };
            text.push_str(&format!("[[device.point]]\nid = \"b{unit}.{name}\"\ntable = \"{table}\"\naddress = {address}\ntype = \"{ty}\"\n"));
        }
    }
    text
}

fn distinct(samples: &HashMap<(String, i64), u32>) -> HashSet<(String, i64)> {
    samples.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sinks_get_exactly_the_same_readings_and_a_30_s_database_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = VictoriaMetrics::start(&dir.path().join("vm"));
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1, 2])
        .await
        .unwrap();
    let data = dir.path().join("adit");
    let text = config_text(&data, sim.addr(), &vm.conf(), "100ms", "interval");
    let config = adit_config::load_str(&text, "durable.toml").unwrap();
    let app = App::start(&config, HttpBind::Required).await.unwrap();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped_at_ms = adit_core::Timestamp::now().as_micros() / 1000;
    vm.stop();
    let outage_start = app.metrics.spool.appended_readings.get();
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    app.metrics.spool.update(app.spool());
    let pending = app.spool().pending_records();
    let during_outage = app.metrics.spool.appended_readings.get() - outage_start;
    assert!(
        pending > 0,
        "records must wait in the spool while the database is down"
    );
    vm.restart();
    let back = Instant::now();
    while app.spool().pending_records() > 0 {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the spool did not drain after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_secs = back.elapsed().as_secs_f64();
    println!(
        "outage of {:.0} s: {during_outage} readings accepted meanwhile, {pending} records waited in the spool, drained in {drain_secs:.2} s after the database returned",
        outage.elapsed().as_secs_f64() - drain_secs
    );
    assert!(app.shutdown().await);

    let in_vm = vm.samples();
    let in_sqlite: HashSet<(String, i64)> =
        sqlite_rows(&data.join("readings.db")).into_iter().collect();
    let vm_set = distinct(&in_vm);
    let duplicates: u32 = in_vm.values().map(|n| n - 1).sum();
    println!(
        "stored: sqlite {} readings, victoriametrics {} distinct ({duplicates} duplicates)",
        in_sqlite.len(),
        vm_set.len()
    );
    assert!(in_sqlite.len() > 300);
    let all_missing: Vec<i64> = in_sqlite
        .difference(&vm_set)
        .map(|(_, t)| *t - stopped_at_ms)
        .collect();
    if !all_missing.is_empty() {
        println!(
            "missing in VM: {} rows, ms relative to the stop: min {:?} max {:?}",
            all_missing.len(),
            all_missing.iter().min(),
            all_missing.iter().max()
        );
    }
    let missing_in_vm: Vec<_> = in_sqlite.difference(&vm_set).take(5).collect();
    let missing_in_sqlite: Vec<_> = vm_set.difference(&in_sqlite).take(5).collect();
    assert!(
        missing_in_vm.is_empty() && missing_in_sqlite.is_empty(),
        "sinks differ: not in VM {missing_in_vm:?}, not in SQLite {missing_in_sqlite:?}"
    );
}
