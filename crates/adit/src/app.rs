//! Assembly of a running adit from a validated config.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_audit::Audit;
use adit_config::Config;
use adit_core::{PointId, PointMeta, PointRegistry};
use adit_modbus::{ModbusBus, ModbusCollector, ModbusDevice, ModbusMetrics};
use adit_pipeline::{
    ClockRules, Health, LiveState, Metrics, Observers, Pipeline, PipelineOptions, Sink,
    SinkOptions, SourceFactory,
};
use adit_sink_questdb::{Conf, QuestDbSink};
use adit_sink_sqlite::{Durability, SqliteSink};
use adit_spool::{FsyncPolicy, Spool, SpoolConfig, WhenFull};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("sqlite sink: {0}")]
    Sink(String),
    #[error("{0}")]
    Spool(String),
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("alerting: {0}")]
    Alerting(String),
    #[error("http endpoint on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Interns every configured point; returns the registry and, per device, the
/// ids of its points in config order.
pub fn build_registry(config: &Config) -> Result<(PointRegistry, Vec<Vec<PointId>>), AppError> {
    let mut registry = PointRegistry::with_max_points(config.pipeline.max_points);
    let mut per_device = Vec::with_capacity(config.devices.len());
    for device in &config.devices {
        let device_name: Arc<str> = device.id.as_str().into();
        let mut ids = Vec::with_capacity(device.points.len());
        for p in &device.points {
            let id = registry
                .insert(PointMeta {
                    name: p.id.as_str().into(),
                    device: device_name.clone(),
                    unit: p.unit.as_str().into(),
                    range: p.range,
                    expected_interval_ms: p.interval.as_millis() as u64,
                    deadband: p.deadband,
                    deadband_heartbeat: p.deadband_heartbeat,
                    stale_after: p.stale_after,
                })
                .map_err(|e| AppError::Device {
                    device: device.id.clone(),
                    reason: e.to_string(),
                })?;
            ids.push(id);
        }
        per_device.push(ids);
    }
    Ok((registry, per_device))
}

type WatchdogParts = (
    Option<tokio::sync::mpsc::Sender<Arc<adit_core::Batch>>>,
    Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
);

/// Stores alert transitions in every sink's `alerts` table, through the spool.
struct SpoolRecorder {
    spool: Spool,
}

impl adit_watchdog::deliver::AlertRecorder for SpoolRecorder {
    fn record(&self, events: &[adit_watchdog::Event]) {
        let records: Vec<adit_spool::AlertRecord> = events
            .iter()
            .map(|e| {
                let label = |k: &str| {
                    e.alert
                        .labels
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                let labels: serde_json::Map<String, serde_json::Value> = e
                    .alert
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                adit_spool::AlertRecord {
                    ts: adit_core::Timestamp::now(),
                    fired: e.transition == adit_watchdog::rules::Transition::Fired,
                    rule: label("alertname").unwrap_or_default(),
                    severity: label("severity").unwrap_or_default(),
                    subject: label("point")
                        .or_else(|| label("device"))
                        .unwrap_or_default(),
                    summary: e
                        .alert
                        .annotations
                        .iter()
                        .find(|(k, _)| k == "summary")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                    labels_json: serde_json::Value::Object(labels).to_string(),
                }
            })
            .collect();
        let spool = self.spool.clone();
        // Off the watchdog's task: a full spool under `block` must not stall alerting.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = spool.append_alerts(&records) {
                tracing::error!(error = %e, alerts = records.len(), "alert transitions not stored");
            }
        });
    }
}

/// adit's own health, as the watchdog's self-health rules see it.
struct Probe {
    metrics: Metrics,
    health: Arc<Health>,
    audit: Audit,
    spool_max_bytes: u64,
}

impl adit_watchdog::selfhealth::SelfHealthProbe for Probe {
    fn sample(&self) -> adit_watchdog::selfhealth::SelfHealth {
        let sum = |name: &str| self.metrics.counter_sum(name, &[]) as u64;
        adit_watchdog::selfhealth::SelfHealth {
            spool_dropped_total: sum("adit_spool_dropped_readings_total"),
            spool_fill: self.metrics.spool.bytes.get() as f64 / self.spool_max_bytes.max(1) as f64,
            sinks_failing: self
                .health
                .sinks()
                .into_iter()
                .filter_map(|s| s.failing_for.map(|d| (s.sink.to_string(), d)))
                .collect(),
            task_restarts_total: sum("adit_task_restarts_total"),
            audit_failing: self
                .audit
                .stats()
                .failing
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Starts the watchdog if the config has rules or alert receivers.
fn start_watchdog(
    config: &Config,
    registry: Arc<PointRegistry>,
    audit: &Audit,
    metrics: &Metrics,
    health: &Arc<Health>,
    spool: Option<Spool>,
    published: tokio::sync::watch::Sender<Arc<adit_watchdog::deliver::AlertState>>,
) -> Result<WatchdogParts, AppError> {
    use adit_config::RuleKind;
    use adit_watchdog::rules::Condition;
    let a = &config.alerting;
    if config.rules.is_empty()
        && a.alertmanagers.is_empty()
        && a.webhooks.is_empty()
        && a.mqtt.is_empty()
    {
        return Ok((None, None));
    }
    let rules: Vec<adit_watchdog::RuleSpec> = config
        .rules
        .iter()
        .map(|r| adit_watchdog::RuleSpec {
            name: r.name.clone(),
            points: r.points.clone(),
            condition: match &r.kind {
                RuleKind::Above { raise, clear } => Condition::Above {
                    raise: *raise,
                    clear: *clear,
                },
                RuleKind::Below { raise, clear } => Condition::Below {
                    raise: *raise,
                    clear: *clear,
                },
                RuleKind::Rate { max_per_second } => Condition::Rate {
                    max_per_second: *max_per_second,
                },
                RuleKind::Flatline { samples } => Condition::Flatline { samples: *samples },
                RuleKind::Stale => Condition::Stale,
                RuleKind::BadQuality => Condition::BadQuality,
                RuleKind::Clock { max_skew } => Condition::Clock {
                    max_skew: *max_skew,
                },
                RuleKind::DeviceDown => Condition::DeviceDown,
            },
            hold: r.hold,
            severity: r.severity.clone(),
            check_first: r.check_first.clone(),
            runbook: r.runbook.clone(),
        })
        .collect();
    let engine = adit_watchdog::Engine::new(&config.site, rules, registry, audit.clone());
    for name in engine.unbound_rules() {
        tracing::warn!(
            rule = name,
            "alert rule matches no point; check its `points` glob"
        );
    }
    let transitions = prometheus::IntCounterVec::new(
        prometheus::Opts::new("adit_alert_transitions_total", "Alerts fired or resolved."),
        &["transition"],
    )?;
    let deliveries = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "adit_alert_deliveries_total",
            "Alert deliveries by receiver kind and outcome.",
        ),
        &["receiver", "outcome"],
    )?;
    metrics.registry.register(Box::new(transitions.clone()))?;
    metrics.registry.register(Box::new(deliveries.clone()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(config.pipeline.channel_capacity);
    let stop = CancellationToken::new();
    let task = tokio::spawn(adit_watchdog::deliver::run_watchdog(
        engine,
        rx,
        adit_watchdog::deliver::Receivers {
            alertmanagers: a.alertmanagers.clone(),
            webhooks: a.webhooks.clone(),
            mqtt: a.mqtt.clone(),
            http: Some(
                adit_watchdog::http::HttpClient::new(a.ca_file.as_deref())
                    .map_err(|e| AppError::Alerting(format!("ca_file: {e}")))?,
            ),
        },
        adit_watchdog::deliver::DeliveryOptions {
            resend_interval: a.resend_interval,
            heartbeat: a.heartbeat,
            state_dir: Some(config.spool.dir.clone()),
            site: config.site.clone(),
            self_health: a.self_health,
        },
        adit_watchdog::deliver::WatchdogMetrics {
            transitions,
            deliveries,
        },
        adit_watchdog::deliver::Hooks {
            probe: Some(Box::new(Probe {
                metrics: metrics.clone(),
                health: health.clone(),
                audit: audit.clone(),
                spool_max_bytes: config.spool.max_size,
            })),
            recorder: spool.map(|spool| {
                Box::new(SpoolRecorder { spool }) as Box<dyn adit_watchdog::deliver::AlertRecorder>
            }),
            published: Some(published),
        },
        stop.clone(),
    ));
    Ok((Some(tx), Some((stop, task))))
}

fn spool_config(s: &adit_config::SpoolSettings) -> SpoolConfig {
    SpoolConfig {
        dir: s.dir.clone(),
        segment_bytes: s.segment_size,
        max_bytes: s.max_size,
        when_full: match s.when_full {
            adit_config::WhenFullPolicy::Block => WhenFull::Block,
            adit_config::WhenFullPolicy::DropOldest => WhenFull::DropOldest,
            adit_config::WhenFullPolicy::DropNewest => WhenFull::DropNewest,
        },
        fsync: match s.fsync {
            adit_config::FsyncSetting::Always => FsyncPolicy::Always,
            adit_config::FsyncSetting::Interval(d) => FsyncPolicy::Interval(d),
            adit_config::FsyncSetting::Never => FsyncPolicy::Never,
        },
        faults: None,
    }
}

/// A running adit.
pub struct App {
    pipeline: Pipeline,
    watchdog: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    pub audit: Audit,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub http_addr: Option<SocketAddr>,
    http_stop: CancellationToken,
    http: Option<tokio::task::JoinHandle<()>>,
    gate: Option<Arc<crate::web::access::Gate>>,
}

/// Whether a failure to bind the HTTP endpoint stops startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpBind {
    Required,
    BestEffort,
}

impl App {
    /// Starts with the sink the config names.
    pub async fn start(config: &Config, http_bind: HttpBind) -> Result<Self, AppError> {
        Self::start_with_sink(config, http_bind, None).await
    }

    /// Starts with `sink` instead of the configured one when given (load
    /// tests measure the collectors without a database this way).
    pub async fn start_with_sink(
        config: &Config,
        http_bind: HttpBind,
        sink: Option<Box<dyn Sink>>,
    ) -> Result<Self, AppError> {
        Self::start_with(config, http_bind, sink, Vec::new()).await
    }

    /// Starts with `extra` sources beside the configured devices (embedding,
    /// and tests of sources that have no config section yet).
    pub async fn start_with_sources(
        config: &Config,
        http_bind: HttpBind,
        extra: Vec<(&'static str, SourceFactory)>,
    ) -> Result<Self, AppError> {
        Self::start_with(config, http_bind, None, extra).await
    }

    async fn start_with(
        config: &Config,
        http_bind: HttpBind,
        sink: Option<Box<dyn Sink>>,
        extra: Vec<(&'static str, SourceFactory)>,
    ) -> Result<Self, AppError> {
        let audit = Audit::open(&config.audit.dir, config.audit.max_file_size)
            .map_err(|e| AppError::Sink(e.to_string()))?;
        audit.record(
            "config_load",
            serde_json::json!({
                "file": config.origin.file,
                "sha256": config.origin.sha256,
                "site": config.site,
                "devices": config.devices.len(),
                "points": config.point_count(),
                "sinks": {
                    "sqlite": config.sinks.sqlite.as_ref().map(|s| s.path.display().to_string()),
                    "questdb": config.sinks.questdb.as_ref().map(|q| q.table.clone()),
                },
            }),
        );
        let metrics = Metrics::new(prometheus::Registry::new())?;
        let modbus_metrics = ModbusMetrics::register(&metrics.registry)?;
        let mqtt_metrics = adit_mqtt::MqttMetrics::register(&metrics.registry)?;
        let opcua_metrics = adit_opcua::OpcuaMetrics::register(&metrics.registry)?;
        let health = Arc::new(Health::default());
        let (registry, ids_per_device) = build_registry(config)?;

        let mut devices = Vec::with_capacity(config.devices.len());
        let mut sources: Vec<(&'static str, SourceFactory)> = extra;
        for (device, ids) in config.devices.iter().zip(ids_per_device) {
            if device.mqtt().is_some() {
                let cm = mqtt_metrics.for_connection(&device.id);
                let conn = adit_mqtt::MqttConnection::new(device.clone(), ids, cm, audit.clone())
                    .map_err(|reason| AppError::Device {
                    device: device.id.clone(),
                    reason,
                })?;
                let shared = Arc::new(conn);
                let factory: SourceFactory =
                    Box::new(move || Box::new(adit_mqtt::MqttCollector::new(shared.clone())));
                sources.push(("mqtt", factory));
                continue;
            }
            if device.opcua().is_some() {
                let cm = opcua_metrics.for_connection(&device.id);
                let conn = adit_opcua::OpcuaConnection::new(device.clone(), ids, cm, audit.clone())
                    .map_err(|reason| AppError::Device {
                        device: device.id.clone(),
                        reason,
                    })?;
                let shared = Arc::new(conn);
                let factory: SourceFactory =
                    Box::new(move || Box::new(adit_opcua::OpcuaCollector::new(shared.clone())));
                sources.push(("opcua", factory));
                continue;
            }
            let dm = modbus_metrics.for_device(&device.id);
            devices.push(ModbusDevice::new(device.clone(), ids, dm).map_err(|e| {
                AppError::Device {
                    device: device.id.clone(),
                    reason: e.to_string(),
                }
            })?);
        }
        for bus in ModbusBus::group(devices, &audit) {
            let protocol = bus
                .devices
                .first()
                .map_or("modbus_tcp", |d| d.config.protocol.name());
            let shared = Arc::new(bus);
            let factory: SourceFactory =
                Box::new(move || Box::new(ModbusCollector::new(shared.clone())));
            sources.push((protocol, factory));
        }

        let registry = Arc::new(registry);
        let retry = |batch_max_rows, batch_max_delay| SinkOptions {
            batch_max_rows,
            batch_max_delay,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        };
        let mut sinks: Vec<(Box<dyn Sink>, SinkOptions)> = Vec::new();
        if let Some(sink) = sink {
            sinks.push((sink, retry(20_000, Duration::from_millis(200))));
        } else {
            if let Some(sqlite) = &config.sinks.sqlite {
                let path = sqlite.path.clone();
                let reg = registry.clone();
                // A commit the spool forgets after its acknowledgement must be
                // as durable as the spool's own promise: under `always` and
                // `interval` that covers a power cut (SQLite in WAL mode with
                // NORMAL syncs only at checkpoints, which can be far apart).
                let durability = match config.spool.fsync {
                    adit_config::FsyncSetting::Never => Durability::ProcessCrash,
                    _ => Durability::PowerLoss,
                };
                let opened = tokio::task::spawn_blocking(move || {
                    SqliteSink::open(&path, &reg, durability).map(|s| s.follow(reg.clone()))
                })
                .await
                .map_err(|e| AppError::Sink(e.to_string()))?
                .map_err(AppError::Sink)?;
                tracing::info!(path = %sqlite.path.display(), points = registry.len(), "sqlite sink open");
                sinks.push((
                    Box::new(opened),
                    retry(sqlite.batch_max_rows, sqlite.batch_max_delay),
                ));
            }
            if let Some(q) = &config.sinks.questdb {
                let sink = QuestDbSink::new(
                    Conf(q.conf.expose().to_string()),
                    q.table.clone(),
                    registry.clone(),
                );
                tracing::info!(
                    table = %q.table,
                    writer = sink.writer(),
                    "questdb sink configured (connects on first write)"
                );
                sinks.push((Box::new(sink), retry(q.batch_max_rows, q.batch_max_delay)));
            }
        }

        let cursors: Vec<&'static str> = sinks.iter().map(|(s, _)| s.name()).collect();
        let spool_cfg = spool_config(&config.spool);
        let reg = registry.clone();
        let (spool, report) =
            tokio::task::spawn_blocking(move || Spool::open(spool_cfg, &reg, &cursors))
                .await
                .map_err(|e| AppError::Spool(e.to_string()))?
                .map_err(|e| AppError::Spool(e.to_string()))?;
        audit.record(
            "spool_open",
            serde_json::json!({
                "dir": config.spool.dir.display().to_string(),
                "records": report.records,
                "pending_records": report.pending_records,
                "torn_bytes": report.torn_bytes,
                "corrupt_regions": report.corrupt_regions,
                "quarantined_bytes": report.quarantined_bytes,
                "quarantine_failures": report.quarantine_failures,
                "repair_failures": report.repair_failures,
                "lost_records": report.lost_records,
                "missing_segments": report.missing_segments,
                "unreadable_segments": report.unreadable_segments,
                "ledger_missing": report.ledger_missing,
            }),
        );
        if report.found_damage() {
            tracing::warn!(?report, dir = %config.spool.dir.display(), "spool recovered from damage");
        } else {
            tracing::info!(records = report.records, pending = report.pending_records, dir = %config.spool.dir.display(), "spool open");
        }

        let options = PipelineOptions {
            channel_capacity: config.pipeline.channel_capacity,
            clock: ClockRules {
                max_future_skew: config.pipeline.max_future_skew,
                max_age: config.pipeline.max_age,
            },
            drain_timeout: Duration::from_secs(10),
        };
        // The watchdog publishes its alert state here; the page shows it.
        let (alerts_tx, alerts_rx) =
            tokio::sync::watch::channel(Arc::new(adit_watchdog::deliver::AlertState::default()));
        let (watchdog_tx, watchdog) = start_watchdog(
            config,
            registry.clone(),
            &audit,
            &metrics,
            &health,
            Some(spool.clone()),
            alerts_tx,
        )?;
        let pipeline = Pipeline::start(
            registry,
            sources,
            sinks,
            spool,
            options,
            Observers {
                metrics: metrics.clone(),
                health: health.clone(),
                audit: audit.clone(),
                watchdog: watchdog_tx,
            },
        );
        audit.record(
            "adit_start",
            serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
        );

        let http_stop = CancellationToken::new();
        let (http_addr, http, gate) = match config.http.listen {
            None => (None, None, None),
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let bound = listener.local_addr().ok();
                    if !addr.ip().is_loopback() && config.http.auth.is_open() {
                        tracing::warn!(
                            %addr,
                            "http: the page and /api are readable by anyone who reaches this \
                             address; set http.token_file or http.user + http.password_file"
                        );
                    }
                    let state = crate::http::HttpState {
                        metrics: metrics.clone(),
                        health: health.clone(),
                        live: pipeline.live(),
                        registry: pipeline.registry(),
                    };
                    let page = crate::http::PageParts {
                        feed: if config.http.page {
                            let feed = crate::web::feed::Feed::new(
                                crate::web::feed::FeedSettings {
                                    site: config.site.clone(),
                                    interval: config.http.update_interval,
                                    max_clients: config.http.max_clients,
                                },
                                pipeline.live(),
                                pipeline.registry(),
                                alerts_rx.clone(),
                                crate::web::feed::PageMetrics::register(&metrics.registry)?,
                                http_stop.clone(),
                            );
                            tokio::spawn(feed.clone().run());
                            Some(feed)
                        } else {
                            None
                        },
                        gate: crate::web::access::Gate::new(
                            &config.http.auth,
                            audit.clone(),
                            config.http.audit_every,
                        ),
                    };
                    let gate = page.gate.clone();
                    let handle =
                        tokio::spawn(crate::http::serve(listener, state, page, http_stop.clone()));
                    (bound, Some(handle), Some(gate))
                }
                Err(source) if http_bind == HttpBind::BestEffort => {
                    tracing::warn!(%addr, error = %source, "http endpoint disabled: cannot bind");
                    (None, None, None)
                }
                Err(source) => {
                    pipeline.shutdown().await;
                    return Err(AppError::Http { addr, source });
                }
            },
        };
        Ok(Self {
            pipeline,
            watchdog,
            audit,
            metrics,
            health,
            http_addr,
            http_stop,
            http,
            gate,
        })
    }

    pub fn live(&self) -> Arc<Mutex<LiveState>> {
        self.pipeline.live()
    }

    pub fn registry(&self) -> Arc<PointRegistry> {
        self.pipeline.registry()
    }

    pub fn spool(&self) -> &Spool {
        self.pipeline.spool()
    }

    /// Stops sources, drains everything accepted into the sink, stops HTTP.
    pub async fn shutdown(self) -> bool {
        let report = self.pipeline.shutdown().await;
        if let Some((stop, task)) = self.watchdog {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(gate) = &self.gate {
            gate.flush_suppressed();
        }
        self.audit.record(
            "adit_stop",
            serde_json::json!({ "drained": report.drained, "left_in_spool": report.left_in_spool }),
        );
        // The process may end right after this: every entry on disk first.
        let audit = self.audit.clone();
        let flushed = tokio::task::spawn_blocking(move || audit.flush(Duration::from_secs(5)))
            .await
            .unwrap_or(false);
        if !flushed {
            tracing::error!("the audit log did not confirm its last entries before exit");
        }
        if report.left_in_spool > 0 {
            tracing::warn!(
                records = report.left_in_spool,
                "left in the spool; delivered at the next start"
            );
        }
        self.http_stop.cancel();
        if let Some(h) = self.http {
            let _ = h.await;
        }
        report.drained
    }
}
