//! The tunnel MQTT simulator: publishes the tunnel scenario (the Modbus
//! simulator's model: CO, NO2, visibility, air velocity per bore, jet fans)
//! as JSON (`{prefix}/{bore}/sensors/{sensor}`, `{"value", "ts", "unit"}`)
//! and as a Sparkplug B edge node (`spBv1.0/{group}/…/{node}/{bore}`, with
//! births, aliases, sequence numbers, a will NDEATH and rebirth on NCMD),
//! and injects faults on command: malformed payloads, silence, values out
//! of range, node death without NDEATH (dropped connection: the broker
//! sends the will), a sequence gap.
//!
//! Ground truth for tests: [`Stats`] counts what the broker acknowledged
//! (QoS 1 PUBACKs), per format, and the rebirth requests received.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_core::Timestamp;
use adit_mqtt::sparkplug::proto::{datatype, Metric, MetricValue, Payload};
use adit_sim_modbus::scenario::{tunnel_signals, SignalKind, TunnelModel};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

/// What the simulator publishes and where.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub host: String,
    pub port: u16,
    pub bores: Vec<String>,
    /// JSON topics under this prefix (`None`: no JSON).
    pub json_prefix: Option<String>,
    /// Sparkplug group and edge node (`None`: no Sparkplug).
    pub sparkplug: Option<(String, String)>,
    pub interval: Duration,
    pub username: Option<(String, String)>,
    /// Client id prefix (two simulators on one broker need different ones).
    pub client_id: String,
}

impl SimConfig {
    pub fn tunnel(host: &str, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            bores: vec!["north".into(), "south".into()],
            json_prefix: Some("tunnel".into()),
            sparkplug: Some(("tunnel".into(), "plc1".into())),
            interval: Duration::from_secs(1),
            username: None,
            client_id: "adit-sim".into(),
        }
    }
}

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `n` JSON messages are not JSON.
    Malformed(u32),
    /// Stop (true) or resume (false) publishing.
    Silence(bool),
    /// The next `n` CO values are 9999 ppm (beyond the 0–300 range).
    OutOfRange(u32),
    /// Drop the Sparkplug connection without NDEATH (the broker sends the
    /// will), reconnect after a few seconds with a new bdSeq.
    DieWithoutDeath,
    /// Skip one Sparkplug sequence number.
    SequenceGap,
}

/// Counts from the simulator's side (ground truth for tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// JSON messages the broker acknowledged (QoS 1).
    pub json_acked: AtomicU64,
    /// Sparkplug DDATA messages the broker acknowledged, and metrics in them.
    pub sparkplug_acked: AtomicU64,
    pub sparkplug_metrics: AtomicU64,
    pub births: AtomicU64,
    pub rebirth_requests: AtomicU64,
}

#[derive(Default)]
struct Faults {
    malformed: u32,
    silent: bool,
    out_of_range: u32,
    die: bool,
    gap: bool,
}

pub struct SimHandle {
    pub stats: Arc<Stats>,
    faults: Arc<Mutex<Faults>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn fault(&self, f: Fault) {
        let mut g = self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match f {
            Fault::Malformed(n) => g.malformed += n,
            Fault::Silence(on) => g.silent = on,
            Fault::OutOfRange(n) => g.out_of_range += n,
            Fault::DieWithoutDeath => g.die = true,
            Fault::SequenceGap => g.gap = true,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }
}

const SENSORS: [(&str, &str, SignalKind); 4] = [
    ("co", "ppm", SignalKind::Co),
    ("no2", "ppm", SignalKind::No2),
    ("visibility", "1/m", SignalKind::Visibility),
    ("air_velocity", "m/s", SignalKind::AirVelocity),
];

/// Sparkplug metric names of the sensors (aliases 1..).
const METRICS: [&str; 4] = ["CO", "NO2", "Visibility", "AirVelocity"];

fn value(model: &TunnelModel, kind: SignalKind) -> f64 {
    let signal = tunnel_signals()
        .into_iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| tunnel_signals().remove(0));
    model.value(&signal)
}

/// Starts publishing; runs until [`SimHandle::stop`].
pub fn start(config: SimConfig) -> SimHandle {
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Mutex::new(Faults::default()));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    if config.json_prefix.is_some() {
        tasks.push(tokio::spawn(json_loop(
            config.clone(),
            stats.clone(),
            faults.clone(),
            stop.clone(),
        )));
    }
    if config.sparkplug.is_some() {
        tasks.push(tokio::spawn(sparkplug_loop(
            config,
            stats.clone(),
            faults.clone(),
            stop.clone(),
        )));
    }
    SimHandle {
        stats,
        faults,
        stop,
        tasks,
    }
}

fn options(config: &SimConfig, suffix: &str) -> MqttOptions {
    let mut o = MqttOptions::new(
        format!("{}-{suffix}", config.client_id),
        &config.host,
        config.port,
    );
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = &config.username {
        o.set_credentials(u, p);
    }
    o
}

/// Drives an event loop, counting PUBACKs into `acked` by pkid kind.
fn drive(
    mut events: rumqttc::EventLoop,
    on_ack: Arc<dyn Fn(u16) + Send + Sync>,
    on_publish: Arc<dyn Fn(&rumqttc::Publish) + Send + Sync>,
    stop: CancellationToken,
    dead: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::PubAck(a))) => on_ack(a.pkid),
                    Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p),
                    Ok(_) => {}
                    Err(_) => {
                        if dead.load(Ordering::Relaxed) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    })
}

async fn json_loop(
    config: SimConfig,
    stats: Arc<Stats>,
    faults: Arc<Mutex<Faults>>,
    stop: CancellationToken,
) {
    let (client, events) = AsyncClient::new(options(&config, "json"), 1024);
    let s = stats.clone();
    let driver = drive(
        events,
        Arc::new(move |_| {
            s.json_acked.fetch_add(1, Ordering::Relaxed);
        }),
        Arc::new(|_| {}),
        stop.clone(),
        Arc::default(),
    );
    let prefix = config.json_prefix.clone().unwrap_or_default();
    let mut models: Vec<TunnelModel> = (0..config.bores.len())
        .map(|i| TunnelModel::new(i as f64 * 1.7))
        .collect();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (silent, mut malformed, mut oor) = {
            let g = faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (g.silent, g.malformed, g.out_of_range)
        };
        if silent {
            continue;
        }
        let ts = Timestamp::now().to_rfc3339();
        for (bore, model) in config.bores.iter().zip(models.iter_mut()) {
            model.step(config.interval.as_secs_f64());
            for (sensor, unit, kind) in SENSORS {
                let mut v = value(model, kind);
                if kind == SignalKind::Co && oor > 0 {
                    oor -= 1;
                    v = 9999.0;
                }
                let payload = if malformed > 0 {
                    malformed -= 1;
                    format!("{{\"value\": {v:.3}, \"ts\": \"{ts}\"")
                } else {
                    format!("{{\"value\": {v:.5}, \"ts\": \"{ts}\", \"unit\": \"{unit}\"}}")
                };
                let topic = format!("{prefix}/{bore}/sensors/{sensor}");
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let mut g = faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.malformed = malformed;
        g.out_of_range = oor;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
}

fn metric_value(v: f64) -> MetricValue {
    MetricValue::Double(v)
}

fn birth_payloads(
    config: &SimConfig,
    bd_seq: u64,
    seq: &mut u64,
    models: &[TunnelModel],
) -> Vec<(String, Vec<u8>)> {
    let (group, node) = config.sparkplug.clone().unwrap_or_default();
    let now = ms_now();
    let mut out = Vec::new();
    let nbirth = Payload {
        timestamp: Some(now),
        metrics: vec![
            Metric::new("bdSeq", None, datatype::INT64, MetricValue::Long(bd_seq)),
            Metric::new(
                "Node Control/Rebirth",
                None,
                datatype::BOOLEAN,
                MetricValue::Boolean(false),
            ),
        ],
        seq: Some(0),
        uuid: None,
        body: None,
    };
    *seq = 0;
    out.push((
        format!("spBv1.0/{group}/NBIRTH/{node}"),
        nbirth.encode_to_vec(),
    ));
    for (bore, model) in config.bores.iter().zip(models) {
        *seq = (*seq + 1) % 256;
        let mut metrics: Vec<Metric> = METRICS
            .iter()
            .zip(SENSORS)
            .enumerate()
            .map(|(i, (name, (_, _, kind)))| {
                Metric::new(
                    name,
                    Some(i as u64 + 1),
                    datatype::DOUBLE,
                    metric_value(value(model, kind)),
                )
            })
            .collect();
        for (i, running) in model.fans_running.iter().enumerate() {
            metrics.push(Metric::new(
                &format!("Fans/Fan{}/Running", i + 1),
                Some(10 + i as u64),
                datatype::BOOLEAN,
                MetricValue::Boolean(*running),
            ));
        }
        for m in &mut metrics {
            m.timestamp = Some(now);
        }
        let p = Payload {
            timestamp: Some(now),
            metrics,
            seq: Some(*seq),
            uuid: None,
            body: None,
        };
        out.push((
            format!("spBv1.0/{group}/DBIRTH/{node}/{bore}"),
            p.encode_to_vec(),
        ));
    }
    out
}

fn ms_now() -> u64 {
    u64::try_from(Timestamp::now().as_micros() / 1000).unwrap_or(0)
}

fn death_payload(bd_seq: u64) -> Vec<u8> {
    Payload {
        timestamp: Some(ms_now()),
        metrics: vec![Metric::new(
            "bdSeq",
            None,
            datatype::INT64,
            MetricValue::Long(bd_seq),
        )],
        seq: None,
        uuid: None,
        body: None,
    }
    .encode_to_vec()
}

#[allow(clippy::many_single_char_names)]
async fn sparkplug_loop(
    config: SimConfig,
    stats: Arc<Stats>,
    faults: Arc<Mutex<Faults>>,
    stop: CancellationToken,
) {
    let (group, node) = config.sparkplug.clone().unwrap_or_default();
    let mut models: Vec<TunnelModel> = (0..config.bores.len())
        .map(|i| TunnelModel::new(0.4 + i as f64 * 1.7))
        .collect();
    let mut bd_seq: u64 = 0;
    'connection: loop {
        let mut o = options(&config, "sparkplug");
        o.set_last_will(LastWill::new(
            format!("spBv1.0/{group}/NDEATH/{node}"),
            death_payload(bd_seq),
            QoS::AtLeastOnce,
            false,
        ));
        let (client, events) = AsyncClient::new(o, 1024);
        let rebirth = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(AtomicBool::new(false));
        let (s, r) = (stats.clone(), rebirth.clone());
        let s2 = stats.clone();
        let driver = drive(
            events,
            Arc::new(move |_| {
                s2.sparkplug_acked.fetch_add(1, Ordering::Relaxed);
            }),
            Arc::new(move |p| {
                let is_rebirth = Payload::decode(p.payload.as_ref()).is_ok_and(|pl| {
                    pl.metrics.iter().any(|m| {
                        m.name.as_deref() == Some("Node Control/Rebirth")
                            && m.value == Some(MetricValue::Boolean(true))
                    })
                });
                if is_rebirth {
                    s.rebirth_requests.fetch_add(1, Ordering::Relaxed);
                    r.store(true, Ordering::Relaxed);
                }
            }),
            stop.clone(),
            dead.clone(),
        );
        let _ = client
            .subscribe(format!("spBv1.0/{group}/NCMD/{node}"), QoS::AtLeastOnce)
            .await;
        let mut seq = 0;
        let mut born = false;
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // A clean end: NDEATH ourselves, then disconnect.
                    let _ = client.publish(format!("spBv1.0/{group}/NDEATH/{node}"), QoS::AtLeastOnce, false, death_payload(bd_seq)).await;
                    let _ = client.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
                    return;
                }
                _ = tick.tick() => {}
            }
            let (silent, die, gap) = {
                let mut g = faults
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let v = (g.silent, g.die, g.gap);
                g.die = false;
                g.gap = false;
                v
            };
            if die {
                // Drop the socket without DISCONNECT: the broker publishes the will.
                dead.store(true, Ordering::Relaxed);
                driver.abort();
                drop(client);
                bd_seq += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
                continue 'connection;
            }
            if silent {
                continue;
            }
            if !born || rebirth.swap(false, Ordering::Relaxed) {
                for (topic, payload) in birth_payloads(&config, bd_seq, &mut seq, &models) {
                    let _ = client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .await;
                }
                stats.births.fetch_add(1, Ordering::Relaxed);
                born = true;
            }
            if gap {
                seq = (seq + 1) % 256;
            }
            let now = ms_now();
            for (bore, model) in config.bores.iter().zip(models.iter_mut()) {
                model.step(config.interval.as_secs_f64());
                seq = (seq + 1) % 256;
                let mut metrics: Vec<Metric> = SENSORS
                    .iter()
                    .enumerate()
                    .map(|(i, (_, _, kind))| {
                        Metric::new(
                            "",
                            Some(i as u64 + 1),
                            datatype::DOUBLE,
                            metric_value(value(model, *kind)),
                        )
                    })
                    .collect();
                for (i, running) in model.fans_running.iter().enumerate() {
                    metrics.push(Metric::new(
                        "",
                        Some(10 + i as u64),
                        datatype::BOOLEAN,
                        MetricValue::Boolean(*running),
                    ));
                }
                for m in &mut metrics {
                    // Data refers to metrics by alias only (the birth named them).
                    m.name = None;
                    m.timestamp = Some(now);
                }
                stats
                    .sparkplug_metrics
                    .fetch_add(metrics.len() as u64, Ordering::Relaxed);
                let p = Payload {
                    timestamp: Some(now),
                    metrics,
                    seq: Some(seq),
                    uuid: None,
                    body: None,
                };
                let _ = client
                    .publish(
                        format!("spBv1.0/{group}/DDATA/{node}/{bore}"),
                        QoS::AtLeastOnce,
                        false,
                        p.encode_to_vec(),
                    )
                    .await;
            }
        }
    }
}
