//! The MQTT load: a Mosquitto (Debian package, started here on a loopback
//! port), adit's own binary subscribed with QoS 1 into SQLite, and a QoS 1
//! publisher in this process offering JSON messages of 100 bytes (or
//! Sparkplug B DDATA of `metrics` metrics each, by alias) at a fixed rate.
//!
//! Figures: messages/s (and Sparkplug metrics/s) adit took, CPU-µs per
//! message (user and system, adit's own /proc accounting, including the
//! durable acknowledgement to the broker), context switches/s, sample→ack
//! p99, RSS; after a draining stop, SQLite's own count against what the
//! broker acknowledged to the publisher (lost must be 0).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_mqtt::sparkplug::proto::{datatype, Metric, MetricValue, Payload};
use prost::Message as _;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::discard::DiscardReceiver;
use crate::processes::AditProcess;
use crate::procfs;
use crate::prom::{quantile_between, Scrape};
use crate::support_mosquitto::Mosquitto;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Sparkplug,
}

/// Where adit stores the readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// The embedded SQLite sink (the default deployment).
    Sqlite,
    /// The QuestDB sink into this harness's discard receiver: the collector
    /// and pipeline's own cost, without a database's.
    Discard,
}

#[derive(Clone, Debug)]
pub struct MqttLoad {
    pub store: Store,
    /// The subscription's QoS: 1 (acknowledged when durable) or 0 (no
    /// acknowledgement: shows what the acks cost).
    pub qos: u8,
    pub format: Format,
    /// Messages per second offered.
    pub rate: f64,
    /// Topics (JSON) or Sparkplug devices the messages rotate over.
    pub topics: usize,
    /// Metrics per Sparkplug DDATA.
    pub metrics: usize,
    pub fsync: String,
    /// The broker's `max_inflight_messages`.
    pub broker_inflight: u16,
    pub warmup: Duration,
    pub measure: Duration,
}

impl MqttLoad {
    fn readings_per_message(&self) -> usize {
        match self.format {
            Format::Json => 1,
            Format::Sparkplug => self.metrics,
        }
    }

    fn config(
        &self,
        data_dir: &Path,
        http_port: u16,
        broker_port: u16,
        discard: Option<&str>,
    ) -> String {
        let subscription = match self.format {
            Format::Json => format!(
                "[[device.subscription]]\nfilter = \"load/+\"\ntemplate = \"load/{{s}}\"\nqos = {}\n\
                 point = \"load.{{s}}\"\ntimestamp = \"/ts\"\ntimestamp_unit = \"us\"\n",
                self.qos
            ),
            Format::Sparkplug => format!(
                "[[device.subscription]]\nfilter = \"spBv1.0/load/#\"\nformat = \"sparkplug\"\nqos = {}\n",
                self.qos
            ),
        };
        format!(
            "site = \"load-mqtt\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [spool]\nfsync = \"{fsync}\"\nmax_size = \"8 GiB\"\n[sink.sqlite]\nenabled = {sqlite}\n{questdb}\
             [[device]]\nid = \"edge\"\nprotocol = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{broker_port}\"\n\
             {subscription}",
            data = data_dir.display(),
            fsync = self.fsync,
            sqlite = discard.is_none(),
            questdb = discard.map_or(String::new(), |conf| format!("[sink.questdb]\nconf = \"{conf}\"\n")),
        )
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0))
}

/// A QoS 1 publisher on its own threads: `published` counts what was handed
/// to rumqttc, `acked` the broker's PUBACKs.
struct Publisher {
    client: Client,
    acked: Arc<AtomicU64>,
}

impl Publisher {
    fn connect(port: u16) -> Self {
        let mut o = MqttOptions::new("adit-load-pub", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(1000)
            .set_clean_session(true);
        let (client, mut connection) = Client::new(o, 10_000);
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Self { client, acked }
    }
}

/// What the publisher thread sends: the messages of one tick.
struct Encoder {
    format: Format,
    topics: usize,
    metrics: usize,
    n: u64,
    /// The next JSON timestamp (µs): real time, strictly increasing.
    base_us: u64,
    /// Per Sparkplug device: the next metric timestamp (ms), kept unique.
    next_ms: Vec<u64>,
    seq: u64,
}

impl Encoder {
    fn births(&mut self) -> Vec<(String, Vec<u8>)> {
        if self.format != Format::Sparkplug {
            return Vec::new();
        }
        let now = now_us() / 1000;
        let mut out = vec![(
            "spBv1.0/load/NBIRTH/n1".to_string(),
            Payload {
                timestamp: Some(now),
                metrics: vec![Metric::new(
                    "bdSeq",
                    None,
                    datatype::INT64,
                    MetricValue::Long(0),
                )],
                seq: Some(0),
                uuid: None,
                body: None,
            }
            .encode_to_vec(),
        )];
        for d in 0..self.topics {
            self.seq = (self.seq + 1) % 256;
            let metrics = (0..self.metrics)
                .map(|m| {
                    Metric::new(
                        &format!("m{m}"),
                        Some(m as u64 + 1),
                        datatype::DOUBLE,
                        MetricValue::Double(0.0),
                    )
                })
                .collect();
            out.push((
                format!("spBv1.0/load/DBIRTH/n1/d{d}"),
                Payload {
                    timestamp: Some(now),
                    metrics,
                    seq: Some(self.seq),
                    uuid: None,
                    body: None,
                }
                .encode_to_vec(),
            ));
        }
        self.next_ms = vec![now + 1; self.topics];
        out
    }

    fn next(&mut self) -> (String, Vec<u8>) {
        let i = self.n;
        self.n += 1;
        let t = (i % self.topics as u64) as usize;
        match self.format {
            Format::Json => {
                // Real time, unique per message (µs), so sample→ack is true.
                let ts = self.base_us.max(now_us());
                self.base_us = ts + 1;
                let mut payload = format!(
                    "{{\"value\":{}.{:03},\"ts\":{},\"seq\":{i},\"unit\":\"ppm\",\"pad\":\"",
                    i % 1000,
                    i % 997,
                    ts
                );
                while payload.len() < 98 {
                    payload.push('x');
                }
                payload.push_str("\"}");
                (format!("load/s{t}"), payload.into_bytes())
            }
            Format::Sparkplug => {
                let ms = self.next_ms[t].max(now_us() / 1000);
                self.next_ms[t] = ms + 1;
                self.seq = (self.seq + 1) % 256;
                let metrics = (0..self.metrics)
                    .map(|m| {
                        let mut metric = Metric::new(
                            "",
                            Some(m as u64 + 1),
                            datatype::DOUBLE,
                            MetricValue::Double((i % 1000) as f64 + m as f64 * 0.001),
                        );
                        metric.name = None;
                        metric.timestamp = Some(ms);
                        metric
                    })
                    .collect();
                (
                    format!("spBv1.0/load/DDATA/n1/d{t}"),
                    Payload {
                        timestamp: Some(ms),
                        metrics,
                        seq: Some(self.seq),
                        uuid: None,
                        body: None,
                    }
                    .encode_to_vec(),
                )
            }
        }
    }
}

fn context_switches(pid: u32) -> u64 {
    procfs::context_switches(pid).unwrap_or(0)
}

pub fn run(l: &MqttLoad, adit: &Path) -> Result<(), String> {
    if l.format == Format::Sparkplug && l.rate / l.topics as f64 > 900.0 {
        return Err(format!(
            "{} messages/s over {} devices outruns Sparkplug's millisecond timestamps: use more --topics",
            l.rate, l.topics
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Both at once: the broker binds its port after this returns, and a
    // second pick made then could be the same port.
    let [broker_port, http_port] = crate::processes::free_ports()?;
    let _broker = Mosquitto::start_with(
        dir.path(),
        broker_port,
        &crate::support_mosquitto::MosquittoOptions {
            max_inflight: Some(l.broker_inflight),
            ..Default::default()
        },
    );
    let discard = match l.store {
        Store::Sqlite => None,
        Store::Discard => Some(DiscardReceiver::start()?),
    };
    let sink = if discard.is_some() {
        "questdb"
    } else {
        "sqlite"
    };
    let config_path = dir.path().join("load.toml");
    std::fs::write(
        &config_path,
        l.config(
            dir.path(),
            http_port,
            broker_port,
            discard.as_ref().map(DiscardReceiver::conf).as_deref(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut adit_process =
        AditProcess::start(adit, &config_path, http_port, dir.path().join("adit.log"))?;
    let pid = adit_process.pid;
    // Publish only once the broker confirmed adit's subscription.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Scrape::fetch(http_port)?.sum("adit_mqtt_subscribed", "") < 1.0 {
        if Instant::now() > deadline {
            return Err("adit did not subscribe within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let publisher = Publisher::connect(broker_port);
    let mut encoder = Encoder {
        format: l.format,
        topics: l.topics,
        metrics: l.metrics,
        n: 0,
        base_us: now_us(),
        next_ms: Vec::new(),
        seq: 0,
    };
    let births_sent = encoder.births();
    let births = births_sent.len() as u64;
    for (topic, payload) in births_sent {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())?;
    }
    std::thread::sleep(Duration::from_millis(300));

    // Offer `rate` messages/s in 10 ms ticks, for warmup + measure.
    let tick = Duration::from_millis(10);
    let per_tick = l.rate * tick.as_secs_f64();
    let start = Instant::now();
    let total = l.warmup + l.measure;
    let mut owed = 0.0;
    let mut before = None;
    let mut next_tick = start;
    while start.elapsed() < total {
        if before.is_none() && start.elapsed() >= l.warmup {
            before = Some((
                Scrape::fetch(http_port)?,
                procfs::cpu_split(pid)?,
                context_switches(pid),
                Instant::now(),
            ));
        }
        owed += per_tick;
        while owed >= 1.0 {
            let (topic, payload) = encoder.next();
            publisher
                .client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string())?;
            owed -= 1.0;
        }
        next_tick += tick;
        if let Some(wait) = next_tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let after = Scrape::fetch(http_port)?;
    let cpu_after = procfs::cpu_split(pid)?;
    let cs_after = context_switches(pid);
    let (before, cpu_before, cs_before, measured_from) =
        before.ok_or("the measure window never started")?;
    let seconds = measured_from.elapsed().as_secs_f64();
    let rss = procfs::status_bytes(pid, "VmRSS")?;
    let peak = procfs::status_bytes(pid, "VmHWM")?;

    // Drain: every message acknowledged by the broker, then by adit.
    let published = encoder.n;
    let deadline = Instant::now() + Duration::from_secs(120);
    while publisher.acked.load(Ordering::Relaxed) < published + births {
        if Instant::now() > deadline {
            return Err("the broker did not acknowledge every message in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wanted = (published as usize * l.readings_per_message()) as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = Scrape::fetch(http_port)?;
        if s.sum("adit_sink_rows_written_total", &format!("sink=\"{sink}\"")) >= wanted {
            break;
        }
        if Instant::now() > deadline {
            break; // counted as lost below
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let accounting = adit_process.stop()?;
    let stored: i64 = match &discard {
        Some(d) => i64::try_from(d.lines.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        None => rusqlite::Connection::open(dir.path().join("readings.db"))
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM readings r JOIN points p ON p.id = r.point_id \
                     WHERE r.quality = 0 AND (p.name LIKE 'load.%' OR p.name LIKE 'load/n1/%')",
                    [],
                    |r| r.get(0),
                )
            })
            .map_err(|e| e.to_string())?,
    };
    let birth_readings = match l.format {
        Format::Json => 0,
        Format::Sparkplug => l.topics * l.metrics,
    };

    let delta = |name: &str, filter: &str| after.sum(name, filter) - before.sum(name, filter);
    let messages = delta("adit_mqtt_messages_total", "");
    let readings = delta("adit_readings_total", "");
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let filter = format!("sink=\"{sink}\"");
    let (b, a) = (
        before.buckets("adit_sink_ack_latency_seconds", &filter),
        after.buckets("adit_sink_ack_latency_seconds", &filter),
    );
    let p99 = quantile_between(&b, &a, 0.99).unwrap_or(f64::NAN);
    let lost = (published as usize * l.readings_per_message() + birth_readings) as i64 - stored;
    println!(
        "mqtt load: {:?} into {:?}, {:.0} messages/s offered over {} {}, QoS {} subscription, broker max_inflight_messages {}, spool fsync {}, {:?} measured after {:?}",
        l.format,
        l.store,
        l.rate,
        l.topics,
        if l.format == Format::Json { "topics" } else { "devices" },
        l.qos,
        l.broker_inflight,
        l.fsync,
        l.measure,
        l.warmup
    );
    println!("  messages/s taken           {:>12.0}", messages / seconds);
    println!("  readings/s                 {:>12.0}", readings / seconds);
    println!(
        "  CPU-µs per message         {:>12.2}  (user {:.2}, system {:.2})",
        (user + system) * 1e6 / messages.max(1.0),
        user * 1e6 / messages.max(1.0),
        system * 1e6 / messages.max(1.0)
    );
    println!(
        "  CPU-µs per reading         {:>12.2}",
        (user + system) * 1e6 / readings.max(1.0)
    );
    println!(
        "  adit CPU                   {:>12.1} % of one core",
        100.0 * (user + system) / seconds
    );
    println!(
        "  context switches/s         {:>12.0}",
        (cs_after.saturating_sub(cs_before)) as f64 / seconds
    );
    println!("  sample→ack p99 ({sink:<7})  {:>12.1} ms", p99 * 1e3);
    println!(
        "  adit RSS                   {:>12.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1_048_576.0,
        peak as f64 / 1_048_576.0
    );
    println!(
        "  published {published} (+{births} births), broker acked {}, stored (SQLite good rows or receiver lines) {stored}, lost {lost}",
        publisher.acked.load(Ordering::Relaxed)
    );
    println!(
        "  final accounting: {}",
        serde_json::to_string(&accounting).unwrap_or_default()
    );
    if lost != 0 {
        return Err(format!("{lost} readings lost"));
    }
    Ok(())
}
