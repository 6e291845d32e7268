//! One measured run: start the simulator and adit, let it warm up, measure a
//! window from adit's own /proc accounting and /metrics, stop adit (it
//! drains) and account for every reading.

use std::path::Path;
use std::time::Instant;

use crate::discard::DiscardReceiver;
use crate::processes::{AditProcess, SimulatorProcess};
use crate::prom::{quantile_between, Scrape};
use crate::scenario::{Receiver, Scenario};
use crate::{procfs, support_vm};

/// Latency quantiles of one sink over the window, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

#[derive(Debug, Clone)]
pub struct SinkResult {
    pub name: &'static str,
    pub stored_rate: f64,
    pub latency: Option<Latency>,
    /// accepted − stored − counted drops − deadband, after the final drain.
    pub lost: i64,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub offered: f64,
    pub accepted_rate: f64,
    pub cpu_fraction: f64,
    pub cpu_us_per_reading: f64,
    /// User and system CPU-µs per reading.
    pub cpu_us_user: f64,
    pub cpu_us_system: f64,
    /// Measured window, seconds.
    pub seconds: f64,
    /// Context switches of all of adit's threads per second.
    pub context_switches_per_s: f64,
    /// Modbus requests answered in the window.
    pub polls: f64,
    /// System calls adit made in the window (`perf stat`), if perf ran.
    pub syscalls: Option<u64>,
    /// CPU time is perf's task-clock (else /proc ticks of 10 ms).
    pub cpu_from_perf: bool,
    pub peak_rss: u64,
    pub rss_end: u64,
    pub spool_pending_start: f64,
    pub spool_pending_end: f64,
    pub sinks: Vec<SinkResult>,
    pub dropped: u64,
    pub sqlite_rows: Option<u64>,
    pub sqlite_stored: Option<u64>,
    /// Lines the discard receiver counted (one per reading).
    pub received_lines: Option<u64>,
    pub questdb_stored: u64,
    pub drained: bool,
}

impl Outcome {
    /// The slowest sink's sustained rate.
    pub fn sustained(&self) -> f64 {
        self.sinks
            .iter()
            .map(|s| s.stored_rate)
            .fold(self.accepted_rate, f64::min)
    }

    /// adit kept up: it took what was offered, stored it, with bounded
    /// latency and no growing backlog.
    pub fn kept_up(&self) -> bool {
        let worst_p99 = self
            .sinks
            .iter()
            .filter_map(|s| s.latency.map(|l| l.p99))
            .fold(0.0, f64::max);
        self.sustained() >= 0.95 * self.offered
            && worst_p99 < 1.0
            && self.spool_pending_end <= self.spool_pending_start * 2.0 + 50.0
    }
}

pub fn run(s: &Scenario, adit: &Path) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (vm, discard) = match (s.sinks.questdb(), s.receiver) {
        (false, _) => (None, None),
        (true, Receiver::VictoriaMetrics) => (
            Some(support_vm::VictoriaMetrics::start(&dir.path().join("vm"))),
            None,
        ),
        (true, Receiver::Discard) => (None, Some(DiscardReceiver::start()?)),
    };
    let questdb_conf = vm
        .as_ref()
        .map(support_vm::VictoriaMetrics::conf)
        .or_else(|| discard.as_ref().map(DiscardReceiver::conf));
    let sim = SimulatorProcess::start(adit, s.devices, s.registers)?;
    let [http_port] = crate::processes::free_ports()?;
    let config = s.config(
        &dir.path().display().to_string(),
        http_port,
        questdb_conf.as_deref(),
        &sim.addresses,
    );
    let config_path = dir.path().join("load.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let mut adit_process =
        AditProcess::start(adit, &config_path, http_port, dir.path().join("adit.log"))?;
    let pid = adit_process.pid;

    std::thread::sleep(s.warmup);
    let before = Scrape::fetch(http_port)?;
    let cpu_before = procfs::cpu_split(pid)?;
    let cs_before = procfs::context_switches(pid)?;
    let started = Instant::now();
    let perf = procfs::perf_counts(pid, s.measure);
    let after = Scrape::fetch(http_port)?;
    let cpu_after = procfs::cpu_split(pid)?;
    let cs_after = procfs::context_switches(pid)?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss = procfs::status_bytes(pid, "VmHWM")?;
    let rss_end = procfs::status_bytes(pid, "VmRSS")?;

    let delta = |name: &str, filter: &str| after.sum(name, filter) - before.sum(name, filter);
    let accepted = delta("adit_readings_total", "");
    let polls = delta("adit_modbus_requests_total", "");
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    // perf's task-clock when it ran (ns resolution); /proc's ticks split it
    // into user and system.
    let (cpu, user, system) = match perf {
        Some(p) if user + system > 0.0 => {
            let share = user / (user + system);
            (
                p.cpu_seconds,
                p.cpu_seconds * share,
                p.cpu_seconds * (1.0 - share),
            )
        }
        Some(p) => (p.cpu_seconds, f64::NAN, f64::NAN),
        None => (user + system, user, system),
    };
    let mut sinks: Vec<SinkResult> = s
        .sinks
        .names()
        .into_iter()
        .map(|name| {
            let filter = format!("sink=\"{name}\"");
            let (b, a) = (
                before.buckets("adit_sink_ack_latency_seconds", &filter),
                after.buckets("adit_sink_ack_latency_seconds", &filter),
            );
            let latency = quantile_between(&b, &a, 0.5).map(|p50| Latency {
                p50,
                p99: quantile_between(&b, &a, 0.99).unwrap_or(f64::NAN),
                p999: quantile_between(&b, &a, 0.999).unwrap_or(f64::NAN),
            });
            SinkResult {
                name,
                stored_rate: delta("adit_sink_rows_written_total", &filter) / seconds,
                latency,
                lost: 0,
            }
        })
        .collect();

    let accounting = adit_process.stop()?;
    drop(sim);
    let field = |k: &str| accounting[k].as_u64().unwrap_or(0);
    let stored_of = |sink: &str| -> u64 {
        accounting["stored"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == sink)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    let accepted_total = field("accepted");
    let dropped = field("spool_dropped") + field("sink_dropped");
    for sink in &mut sinks {
        let accounted = stored_of(sink.name) + dropped + field("deadband_suppressed");
        sink.lost = i64::try_from(accepted_total).unwrap_or(i64::MAX)
            - i64::try_from(accounted).unwrap_or(i64::MAX);
    }
    let sqlite_rows = if s.sinks.sqlite() {
        let conn = rusqlite::Connection::open(dir.path().join("readings.db"))
            .map_err(|e| e.to_string())?;
        Some(
            conn.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0))
                .map_err(|e| e.to_string())? as u64,
        )
    } else {
        None
    };
    drop(vm);
    let received_lines = discard
        .as_ref()
        .map(|d| d.lines.load(std::sync::atomic::Ordering::Relaxed));
    Ok(Outcome {
        received_lines,
        offered: s.offered_rate(),
        accepted_rate: accepted / seconds,
        cpu_fraction: cpu / seconds,
        cpu_us_per_reading: 1e6 * cpu / accepted.max(1.0),
        cpu_us_user: 1e6 * user / accepted.max(1.0),
        cpu_us_system: 1e6 * system / accepted.max(1.0),
        seconds,
        context_switches_per_s: cs_after.saturating_sub(cs_before) as f64 / seconds,
        polls,
        syscalls: perf.map(|p| p.syscalls),
        cpu_from_perf: perf.is_some(),
        peak_rss,
        rss_end,
        spool_pending_start: before.sum("adit_spool_pending_records", ""),
        spool_pending_end: after.sum("adit_spool_pending_records", ""),
        sinks,
        dropped,
        sqlite_rows,
        sqlite_stored: s.sinks.sqlite().then(|| stored_of("sqlite")),
        questdb_stored: stored_of("questdb"),
        drained: field("left_in_spool_records") == 0,
    })
}

/// Prints one run's report.
pub fn print(s: &Scenario, o: &Outcome) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "load: {} devices × {} registers every {:?} = {:.0} readings/s offered, {} points; sinks {:?}{}; fsync {}; {:?} measured after {:?}",
        s.devices,
        s.registers,
        s.interval,
        o.offered,
        s.points(),
        s.sinks.names(),
        if s.sinks.questdb() {
            format!(" (QuestDB sink → {:?})", s.receiver)
        } else {
            String::new()
        },
        s.fsync,
        s.measure,
        s.warmup
    );
    println!("  readings/s accepted      {:>12.0}", o.accepted_rate);
    for sink in &o.sinks {
        println!(
            "  readings/s stored {:<7}{:>12.0}",
            sink.name, sink.stored_rate
        );
        if let Some(l) = sink.latency {
            println!(
                "  sample→ack {:<7} p50 {:>8.1} ms   p99 {:>8.1} ms   p99.9 {:>8.1} ms",
                sink.name,
                l.p50 * 1e3,
                l.p99 * 1e3,
                l.p999 * 1e3
            );
        }
    }
    println!(
        "  adit CPU                 {:>12.1} % of one core",
        100.0 * o.cpu_fraction
    );
    println!(
        "  adit CPU-µs per reading  {:>12.2} (user {:.2} + system {:.2}; {})",
        o.cpu_us_per_reading,
        o.cpu_us_user,
        o.cpu_us_system,
        if o.cpu_from_perf {
            "perf task-clock, split by /proc ticks"
        } else {
            "/proc ticks"
        }
    );
    println!(
        "  adit CPU-µs per poll     {:>12.1} ({:.0} polls/s)",
        o.cpu_us_per_reading * o.accepted_rate * o.seconds / o.polls.max(1.0),
        o.polls / o.seconds
    );
    println!(
        "  context switches/s       {:>12.0} ({:.1} per poll)",
        o.context_switches_per_s,
        o.context_switches_per_s * o.seconds / o.polls.max(1.0)
    );
    match o.syscalls {
        Some(n) => println!(
            "  system calls/s           {:>12.0} ({:.1} per poll)",
            n as f64 / o.seconds,
            n as f64 / o.polls.max(1.0)
        ),
        None => println!("  system calls             (perf stat not available)"),
    }
    println!(
        "  adit peak RSS            {:>12.1} MiB (at end {:.1} MiB)",
        mib(o.peak_rss),
        mib(o.rss_end)
    );
    println!(
        "  spool backlog (records)  {:>12.0} → {:.0}",
        o.spool_pending_start, o.spool_pending_end
    );
    for sink in &o.sinks {
        println!("  readings lost {:<11}{:>12}", sink.name, sink.lost);
    }
    println!("  readings dropped (counted, with a reason) {}", o.dropped);
    if let (Some(rows), Some(stored)) = (o.sqlite_rows, o.sqlite_stored) {
        println!("  SQLite rows {rows} (adit acknowledged {stored})");
    }
    if let Some(lines) = o.received_lines {
        println!(
            "  receiver (discard) lines {lines} (adit acknowledged {})",
            o.questdb_stored
        );
    }
    println!("  drained at stop          {:>12}", o.drained);
    println!("  kept up                  {:>12}", o.kept_up());
}
