//! Modbus load figures: polls/s, decoded readings/s, CPU-µs per reading and
//! peak RSS of the ingestor, with the simulator in a separate process so its
//! CPU is not counted.
//!
//! ```text
//! cargo build --release -p adit --examples
//! target/release/examples/modbus_load --devices 1 --registers 100 --interval 1ms --seconds 10
//! target/release/examples/modbus_load --devices 100 --registers 100 --interval 100ms --seconds 10
//! target/release/examples/modbus_load --devices 100 --registers 100 --interval 100ms --sink sqlite
//! ```
//!
//! `--sink null` (the default) drops readings after the pipeline's normalize
//! and live-state stages, to measure the collectors; `--sink sqlite` writes
//! them to SQLite in a temporary directory, to measure the whole path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_core::Reading;
use adit_pipeline::{Sink, SinkError};

struct Args {
    devices: usize,
    registers: u16,
    interval: String,
    seconds: u64,
    sqlite: bool,
}

fn args() -> Args {
    let mut a = Args {
        devices: 1,
        registers: 100,
        interval: "10ms".into(),
        seconds: 10,
        sqlite: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--devices" => a.devices = value().parse().unwrap(),
            "--registers" => a.registers = value().parse().unwrap(),
            "--interval" => a.interval = value(),
            "--seconds" => a.seconds = value().parse().unwrap(),
            "--sink" => a.sqlite = value() == "sqlite",
            other => panic!("unknown flag {other}; see the file's doc comment"),
        }
    }
    a
}

/// Counts and drops readings.
struct NullSink(Arc<AtomicU64>);

impl Sink for NullSink {
    fn name(&self) -> &'static str {
        "null"
    }
    fn write(&mut self, readings: &[Reading]) -> Result<(), SinkError> {
        self.0.fetch_add(readings.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// CPU time (user + system) of this process, from /proc (`USER_HZ` = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn counter(app: &App, name: &str, label: Option<(&str, &str)>) -> f64 {
    app.metrics.counter_sum(name, label.as_slice())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let exe = std::env::current_exe().unwrap();
    let adit_bin = exe.parent().and_then(|p| p.parent()).unwrap().join("adit");
    assert!(
        adit_bin.exists(),
        "{} not found: cargo build --release -p adit first",
        adit_bin.display()
    );
    let mut sim = Command::new(&adit_bin)
        .args([
            "--log-level",
            "warn",
            "sim",
            "modbus",
            "--listen",
            "127.0.0.1:0",
            "--units",
            "1",
        ])
        .args([
            "--count",
            &a.devices.to_string(),
            "--bulk",
            &a.registers.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let addrs: Vec<String> = (0..a.devices)
        .map(|_| {
            lines
                .next()
                .unwrap()
                .unwrap()
                .split_whitespace()
                .nth(3)
                .unwrap()
                .to_string()
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("site = \"load\"\ndata_dir = \"{}\"\n[http]\nlisten = \"off\"\n[sink.sqlite]\nbatch_max_rows = 20000\n", dir.path().display());
    for (d, addr) in addrs.iter().enumerate() {
        let _ = write!(
            text,
            "[[device]]\nid = \"d{d}\"\nprotocol = \"modbus_tcp\"\naddress = \"{addr}\"\npoll_interval = \"{}\"\ntimeout = \"1s\"\n",
            a.interval
        );
        for r in 0..a.registers {
            let _ = write!(
                text,
                "[[device.point]]\nid = \"d{d}.r{r}\"\ntable = \"holding\"\naddress = {}\n",
                1000 + r
            );
        }
    }
    let config = adit_config::load_str(&text, "load.toml").unwrap();
    let stored = Arc::new(AtomicU64::new(0));
    let sink: Option<Box<dyn Sink>> = if a.sqlite {
        None
    } else {
        Some(Box::new(NullSink(stored.clone())))
    };
    let app = App::start_with_sink(&config, HttpBind::Required, sink)
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_secs(2)).await; // warm up: connect, allocate
    let (r0, p0, c0, t0) = (
        counter(&app, "adit_source_readings_total", None),
        counter(&app, "adit_modbus_requests_total", Some(("outcome", "ok"))),
        cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (r1, p1, c1, secs) = (
        counter(&app, "adit_source_readings_total", None),
        counter(&app, "adit_modbus_requests_total", Some(("outcome", "ok"))),
        cpu_seconds(),
        t0.elapsed().as_secs_f64(),
    );
    let failed = counter(&app, "adit_modbus_requests_total", None) - p1;
    let readings = r1 - r0;
    let polls = p1 - p0;
    assert!(app.shutdown().await);
    let _ = sim.kill();
    let _ = sim.wait();

    println!(
        "modbus load: {} device(s) × {} registers, interval {}, sink {}, {:.1} s measured",
        a.devices,
        a.registers,
        a.interval,
        if a.sqlite { "sqlite" } else { "null" },
        secs
    );
    println!("  polls/s            {:>12.0}", polls / secs);
    println!("  readings/s         {:>12.0}", readings / secs);
    println!(
        "  CPU (ingestor)     {:>12.1} % of one core",
        100.0 * (c1 - c0) / secs
    );
    println!(
        "  CPU-µs per reading {:>12.3}",
        1e6 * (c1 - c0) / readings.max(1.0)
    );
    println!("  peak RSS           {:>12.1} MiB", peak_rss_mib());
    println!("  failed requests    {failed:>12.0}");
    if !a.sqlite {
        println!(
            "  dropped by null sink (all of them, by design): {}",
            stored.load(Ordering::Relaxed)
        );
    }
}
