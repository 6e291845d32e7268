//! `adit-load`: adit's load harness. Runs the real `adit` binary against
//! Modbus simulators in a separate process (so the figures are adit's own:
//! CPU from /proc/PID/stat, memory from /proc/PID/status), into SQLite and/or
//! the QuestDB sink (VictoriaMetrics from Debian's packages as the ILP
//! receiver), and reports readings/s, CPU-µs per reading, sample→ack latency
//! quantiles, RSS, and readings lost after a draining stop (must be 0).
//!
//! ```text
//! cargo build --release -p adit -p adit-load
//! target/release/adit-load run --devices 100 --registers 100 --interval 1s
//! target/release/adit-load ceiling --sinks questdb
//! target/release/adit-load memory
//! target/release/adit-load mqtt --format json --rate 20000
//! target/release/adit-load mqtt --format sparkplug --rate 2000 --metrics 10
//! target/release/adit-load opcua --items 20000 --interval 100ms
//! target/release/adit-load page --clients 100
//! ```

mod discard;
mod measure;
mod mqtt;
mod opcua;
mod page;
mod processes;
mod procfs;
mod prom;
mod scenario;

#[allow(clippy::missing_panics_doc)]
#[path = "../../../crates/adit/tests/support_vm.rs"]
mod support_vm;

#[allow(clippy::missing_panics_doc)]
#[path = "../../../crates/adit/tests/support_mosquitto.rs"]
mod support_mosquitto;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::scenario::{Receiver, Scenario, Sinks};

#[derive(Parser)]
#[command(
    name = "adit-load",
    about = "adit's load harness (see the README's Performance section)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Modbus servers (one TCP connection each).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// u16 holding registers polled per device (one point each).
    #[arg(long, default_value_t = 100)]
    registers: u16,
    /// Poll interval, e.g. 1s, 200ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    #[arg(long, value_enum, default_value_t = Sinks::Sqlite)]
    sinks: Sinks,
    /// The QuestDB sink's receiver.
    #[arg(long, value_enum, default_value_t = Receiver::VictoriaMetrics)]
    receiver: Receiver,
    /// Spool fsync policy: always, interval, never.
    #[arg(long, default_value = "interval")]
    fsync: String,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    measure: Duration,
}

#[derive(Subcommand)]
enum Mode {
    /// One load, one report.
    Run(Load),
    /// Raises the offered rate ×1.5 per step (shorter intervals) until adit
    /// no longer keeps up; reports the highest rate it sustained.
    Ceiling {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 12)]
        max_steps: usize,
    },
    /// RSS at several point counts with the same readings/s: base + bytes
    /// per point.
    Memory {
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        points: Vec<usize>,
        #[arg(long, value_enum, default_value_t = Sinks::Sqlite)]
        sinks: Sinks,
    },
    /// The site loads of issue 13, measured the same way every time:
    /// `small` 10 devices × 100 registers every 1 s (1k readings/s),
    /// `large` 50 × 100 every 250 ms (20k/s), `idle` 1 device × 10
    /// registers every 1 s (reports CPU-seconds per hour).
    Site {
        #[arg(long, value_enum)]
        profile: Profile,
        #[arg(long, value_enum, default_value_t = Sinks::Questdb)]
        sinks: Sinks,
        #[arg(long, value_enum, default_value_t = Receiver::VictoriaMetrics)]
        receiver: Receiver,
        #[arg(long, default_value = "interval")]
        fsync: String,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        warmup: Duration,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        measure: Duration,
    },
    /// OPC UA: adit's simulator in its own process serving `items`
    /// doubles that change every `interval`, adit subscribed to all of them.
    Opcua {
        #[arg(long, default_value_t = 5000)]
        items: usize,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[arg(long, value_enum, default_value_t = opcua::Security::Encrypt)]
        security: opcua::Security,
        /// Store into SQLite (default: the discard ILP receiver).
        #[arg(long)]
        sqlite: bool,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        warmup: Duration,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        measure: Duration,
    },
    /// The control-room page: adit measured with no page open, then with
    /// `clients` event streams connected (10k points by default).
    Page {
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 100)]
        registers: u16,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Extra clients that connect and do not read during the window.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        warmup: Duration,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        measure: Duration,
    },
    /// MQTT: a Mosquitto started here, a QoS 1 publisher in this process,
    /// adit subscribed into SQLite (needs Debian's mosquitto).
    Mqtt {
        #[arg(long, value_enum, default_value_t = mqtt::Format::Json)]
        format: mqtt::Format,
        #[arg(long, value_enum, default_value_t = mqtt::Store::Sqlite)]
        store: mqtt::Store,
        /// adit's subscription QoS (the publisher always sends QoS 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// Messages per second offered.
        #[arg(long, default_value_t = 20_000.0)]
        rate: f64,
        /// Topics (JSON) or Sparkplug devices the messages rotate over.
        #[arg(long, default_value_t = 20)]
        topics: usize,
        /// Metrics per Sparkplug DDATA.
        #[arg(long, default_value_t = 10)]
        metrics: usize,
        #[arg(long, default_value = "interval")]
        fsync: String,
        /// The broker's `max_inflight_messages`: unacknowledged QoS 1
        /// messages it sends one client (Mosquitto's own default is 20).
        #[arg(long, default_value_t = 1000)]
        broker_inflight: u16,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        warmup: Duration,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        measure: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Profile {
    Small,
    Large,
    Idle,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: not a duration"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn scenario(l: &Load) -> Scenario {
    Scenario {
        devices: l.devices,
        registers: l.registers,
        interval: l.interval,
        sinks: l.sinks,
        receiver: l.receiver,
        fsync: l.fsync.clone(),
        warmup: l.warmup,
        measure: l.measure,
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.mode) {
        eprintln!("adit-load: {e}");
        std::process::exit(1);
    }
}

fn run(mode: Mode) -> Result<(), String> {
    let adit = processes::adit_binary()?;
    match mode {
        Mode::Mqtt {
            format,
            store,
            qos,
            rate,
            topics,
            metrics,
            fsync,
            broker_inflight,
            warmup,
            measure,
        } => mqtt::run(
            &mqtt::MqttLoad {
                store,
                qos,
                format,
                rate,
                topics,
                metrics,
                fsync,
                broker_inflight,
                warmup,
                measure,
            },
            &adit,
        )?,
        Mode::Page {
            devices,
            registers,
            interval,
            clients,
            stalled,
            warmup,
            measure,
        } => page::run(
            &page::PageLoad {
                devices,
                registers,
                interval,
                clients,
                stalled,
                warmup,
                measure,
            },
            &adit,
        )?,
        Mode::Opcua {
            items,
            interval,
            security,
            sqlite,
            warmup,
            measure,
        } => opcua::run(
            &opcua::OpcuaLoad {
                items,
                interval,
                security,
                sqlite,
                warmup,
                measure,
            },
            &adit,
        )?,
        Mode::Site {
            profile,
            sinks,
            receiver,
            fsync,
            warmup,
            measure,
        } => {
            let (devices, registers, interval) = match profile {
                Profile::Small => (10, 100, Duration::from_secs(1)),
                Profile::Large => (50, 100, Duration::from_millis(250)),
                Profile::Idle => (1, 10, Duration::from_secs(1)),
            };
            let s = Scenario {
                devices,
                registers,
                interval,
                sinks,
                receiver,
                fsync,
                warmup,
                measure,
            };
            let o = measure::run(&s, &adit)?;
            measure::print(&s, &o);
            println!(
                "  CPU-seconds per hour     {:>12.1} ({profile:?} profile)",
                o.cpu_fraction * 3600.0
            );
        }
        Mode::Run(load) => {
            let s = scenario(&load);
            let o = measure::run(&s, &adit)?;
            measure::print(&s, &o);
        }
        Mode::Ceiling { load, max_steps } => {
            let mut s = scenario(&load);
            let mut best: Option<(f64, f64)> = None;
            for step in 0..max_steps {
                let o = measure::run(&s, &adit)?;
                println!(
                    "step {step}: offered {:>10.0}/s  sustained {:>10.0}/s  CPU-µs/reading {:>6.2}  p99 {}  backlog {:.0}→{:.0}  {}",
                    o.offered,
                    o.sustained(),
                    o.cpu_us_per_reading,
                    o.sinks
                        .iter()
                        .map(|k| format!("{} {:.0} ms", k.name, k.latency.map_or(f64::NAN, |l| l.p99 * 1e3)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    o.spool_pending_start,
                    o.spool_pending_end,
                    if o.kept_up() { "kept up" } else { "FELL BEHIND" }
                );
                if !o.kept_up() {
                    break;
                }
                best = Some((o.offered, o.sustained()));
                s.interval = s.interval.div_f64(1.5);
            }
            match best {
                Some((offered, sustained)) => println!(
                    "ceiling: {sustained:.0} readings/s sustained (offered {offered:.0}/s) with sinks {:?}, fsync {}",
                    s.sinks.names(),
                    s.fsync
                ),
                None => println!("ceiling: adit did not keep up even at the first step"),
            }
        }
        Mode::Memory {
            rate,
            points,
            sinks,
        } => {
            let mut samples = Vec::new();
            for &n in &points {
                let devices = (n / 1000).clamp(10, 100);
                let registers =
                    u16::try_from(n / devices).map_err(|_| "too many points per device")?;
                let interval = Duration::from_secs_f64(n as f64 / rate);
                let s = Scenario {
                    devices,
                    registers,
                    interval,
                    sinks,
                    receiver: Receiver::VictoriaMetrics,
                    fsync: "interval".into(),
                    warmup: (interval * 3).max(Duration::from_secs(5)),
                    measure: (interval * 2).max(Duration::from_secs(10)),
                };
                let o = measure::run(&s, &adit)?;
                println!(
                    "memory: {:>7} points at {:>7.0} readings/s: RSS {:>7.1} MiB, peak {:>7.1} MiB, CPU-µs/reading {:.2}, lost {:?}",
                    s.points(),
                    o.accepted_rate,
                    o.rss_end as f64 / 1_048_576.0,
                    o.peak_rss as f64 / 1_048_576.0,
                    o.cpu_us_per_reading,
                    o.sinks.iter().map(|k| k.lost).collect::<Vec<_>>()
                );
                samples.push((s.points() as f64, o.rss_end as f64));
            }
            if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
                if last.0 > first.0 {
                    let per_point = (last.1 - first.1) / (last.0 - first.0);
                    let base = first.1 - per_point * first.0;
                    println!(
                        "memory: base {:.1} MiB + {:.0} bytes per point (from {} to {} points)",
                        base / 1_048_576.0,
                        per_point,
                        first.0,
                        last.0
                    );
                }
            }
        }
    }
    Ok(())
}
