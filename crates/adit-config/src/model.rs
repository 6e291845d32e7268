//! The validated config: typed, complete, and consistent. Everything downstream
//! reads only these types; nothing re-parses strings after validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::modbus::{
    DataType, DeviceClock, ModbusAddress, ModbusSettings, Parity, PollPhase, SerialConfig, Table,
    WordOrder,
};
pub use crate::mqtt::{
    JsonFormat, MqttAddress, MqttSettings, MqttVersion, PayloadFormat, Subscription, TimestampUnit,
    TopicNaming,
};
pub use crate::opcua::{
    DataChangeTrigger, Group, GroupMode, Identity, OpcuaAddress, OpcuaSettings, SecurityMode,
    SecurityPolicy, ServerDeadband, SubscribeSettings, TimestampSource,
};

/// Where a config came from, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOrigin {
    pub file: String,
    /// SHA-256 (hex) of the config text.
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub origin: ConfigOrigin,
    pub site: String,
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub pipeline: PipelineConfig,
    pub sinks: SinksConfig,
    pub spool: SpoolSettings,
    pub audit: AuditConfig,
    pub devices: Vec<DeviceConfig>,
    pub rules: Vec<RuleConfig>,
    pub alerting: AlertingConfig,
}

/// What an alert rule tests (see the watchdog for the semantics).
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Above { raise: f64, clear: f64 },
    Below { raise: f64, clear: f64 },
    Rate { max_per_second: f64 },
    Flatline { samples: u32 },
    Stale,
    BadQuality,
    Clock { max_skew: Duration },
    DeviceDown,
}

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub name: String,
    /// Glob on point ids.
    pub points: String,
    pub kind: RuleKind,
    pub hold: Duration,
    pub severity: String,
    pub check_first: String,
    pub runbook: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlertingConfig {
    pub alertmanagers: Vec<String>,
    pub webhooks: Vec<String>,
    /// Brokers that get the alert state as retained messages.
    pub mqtt: Vec<MqttTarget>,
    /// PEM file of extra CAs to trust for https receivers (a site CA).
    pub ca_file: Option<PathBuf>,
    pub resend_interval: Duration,
    pub heartbeat: bool,
    pub self_health: SelfHealthConfig,
}

/// Thresholds of the self-health alerts (`[alerting.self_health]`; the
/// watchdog's `selfhealth` evaluates them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfHealthConfig {
    /// `AditSpoolFilling` above this fraction of the spool's size bound.
    pub spool_fill: f64,
    /// `AditSinkFailing` once a sink has failed for this long.
    pub sink_failing_for: Duration,
    /// `AditCollectorRestartLoop` at this many restarts within `restart_window`.
    pub restarts: u64,
    pub restart_window: Duration,
    /// `AditSpoolDropping` stays raised this long after the last drop.
    pub dropping_hold: Duration,
}

impl Default for SelfHealthConfig {
    fn default() -> Self {
        Self {
            spool_fill: 0.8,
            sink_failing_for: Duration::from_secs(60),
            restarts: 3,
            restart_window: Duration::from_secs(300),
            dropping_hold: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFullPolicy {
    Block,
    DropOldest,
    DropNewest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncSetting {
    Always,
    Interval(Duration),
    Never,
}

/// The on-disk spool between the pipeline and the sinks.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub segment_size: u64,
    pub max_size: u64,
    pub when_full: WhenFullPolicy,
    pub fsync: FsyncSetting,
}

impl Config {
    pub fn point_count(&self) -> usize {
        self.devices.iter().map(|d| d.points.len()).sum()
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub max_file_size: u64,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `None` disables the HTTP endpoint.
    pub listen: Option<SocketAddr>,
    /// Whether the control-room page (`/`, `/events`) is served.
    pub page: bool,
    /// How often the page's event stream sends what changed.
    pub update_interval: Duration,
    /// Most event-stream clients at once; more get 503.
    pub max_clients: usize,
    /// Who may read the page and `/api` (`/metrics`, `/healthz` and
    /// `/readyz` stay open for probes and scrapers).
    pub auth: HttpAuth,
    /// Accesses by one client to one path are audited at most this often
    /// (the entry counts the ones in between); refusals always are.
    pub audit_every: Duration,
}

/// Credentials the page and `/api` accept: any one that is configured.
#[derive(Debug, Clone, Default)]
pub struct HttpAuth {
    /// `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// HTTP basic auth (user, password).
    pub basic: Option<(String, Secret)>,
}

impl HttpAuth {
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.basic.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Capacity, in batches, of each channel between stages.
    pub channel_capacity: usize,
    /// A source timestamp further ahead of adit's clock than this is `ClockInvalid`.
    pub max_future_skew: Duration,
    /// A source timestamp older than this is `ClockInvalid`.
    pub max_age: Duration,
    /// Most points in all: the configured ones plus those sources name at
    /// run time (MQTT wildcards, Sparkplug births); more are refused,
    /// counted and audited.
    pub max_points: usize,
}

#[derive(Debug, Clone)]
pub struct SinksConfig {
    /// `None` when `[sink.sqlite] enabled = false`.
    pub sqlite: Option<SqliteSinkConfig>,
    pub questdb: Option<QuestDbSinkConfig>,
}

/// A value that may come from the environment and is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct QuestDbSinkConfig {
    /// The whole questdb-rs connection string, `${VAR}` already expanded.
    pub conf: Secret,
    pub table: String,
    pub batch_max_rows: usize,
    pub batch_max_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct SqliteSinkConfig {
    /// Absolute, or relative to the current directory (already joined with `data_dir`).
    pub path: PathBuf,
    pub batch_max_rows: usize,
    pub batch_max_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A connection to an MQTT broker (`broker = "mqtt://…"`).
    Mqtt,
    /// A connection to an OPC UA server (`endpoint = "opc.tcp://…"`).
    Opcua,
    /// Modbus TCP (MBAP framing) to `address`.
    ModbusTcp,
    /// Modbus RTU framing over a TCP connection (serial gateways in
    /// transparent mode).
    ModbusRtuOverTcp,
    /// Modbus RTU on a serial line.
    ModbusRtu,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Mqtt,
        Protocol::Opcua,
        Protocol::ModbusTcp,
        Protocol::ModbusRtuOverTcp,
        Protocol::ModbusRtu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Opcua => "opcua",
            Protocol::ModbusTcp => "modbus_tcp",
            Protocol::ModbusRtuOverTcp => "modbus_rtu_over_tcp",
            Protocol::ModbusRtu => "modbus_rtu",
        }
    }
}

/// A device, whatever its protocol: what every collector shares, plus the
/// protocol's own settings (validated by that protocol's module of
/// `validate`).
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub protocol: Protocol,
    pub description: String,
    /// How often the device is polled (polled protocols) and the default
    /// interval of its points.
    pub poll_interval: Duration,
    /// Every connect and request.
    pub timeout: Duration,
    /// Reconnect backoff.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub points: Vec<PointConfig>,
    pub settings: DeviceSettings,
}

/// The protocol's own part of a device.
#[derive(Debug, Clone)]
pub enum DeviceSettings {
    Modbus(ModbusSettings),
    Mqtt(MqttSettings),
    Opcua(OpcuaSettings),
}

impl DeviceConfig {
    /// The Modbus settings, if this is a Modbus device.
    pub fn modbus(&self) -> Option<&ModbusSettings> {
        match &self.settings {
            DeviceSettings::Modbus(m) => Some(m),
            DeviceSettings::Mqtt(_) | DeviceSettings::Opcua(_) => None,
        }
    }

    /// The MQTT settings, if this is an MQTT connection.
    pub fn mqtt(&self) -> Option<&MqttSettings> {
        match &self.settings {
            DeviceSettings::Mqtt(m) => Some(m),
            DeviceSettings::Modbus(_) | DeviceSettings::Opcua(_) => None,
        }
    }

    /// The OPC UA settings, if this is an OPC UA connection.
    pub fn opcua(&self) -> Option<&OpcuaSettings> {
        match &self.settings {
            DeviceSettings::Opcua(o) => Some(o),
            DeviceSettings::Modbus(_) | DeviceSettings::Mqtt(_) => None,
        }
    }
}

/// A point, whatever its protocol: identity, engineering conversion,
/// range, schedule and storage behaviour, plus where the protocol finds it.
#[derive(Debug, Clone)]
pub struct PointConfig {
    pub id: String,
    pub scale: f64,
    pub offset: f64,
    pub unit: String,
    pub range: Option<(f64, f64)>,
    /// Poll interval of this point (defaults to the device's).
    pub interval: Duration,
    /// Store only moves of at least this much (engineering units), quality
    /// changes, and one reading per `deadband_heartbeat`.
    pub deadband: Option<f64>,
    pub deadband_heartbeat: Duration,
    /// No sample for this long makes the point `bad(stale)`.
    pub stale_after: Duration,
    pub description: String,
    pub address: PointAddress,
}

/// Where the protocol finds a point.
#[derive(Debug, Clone, PartialEq)]
pub enum PointAddress {
    Modbus(ModbusAddress),
    Mqtt(MqttAddress),
    Opcua(OpcuaAddress),
}

impl PointConfig {
    /// The Modbus address, if this is a Modbus point.
    pub fn modbus(&self) -> Option<&ModbusAddress> {
        match &self.address {
            PointAddress::Modbus(m) => Some(m),
            PointAddress::Mqtt(_) | PointAddress::Opcua(_) => None,
        }
    }

    /// The MQTT topic, if this is an MQTT point.
    pub fn mqtt(&self) -> Option<&MqttAddress> {
        match &self.address {
            PointAddress::Mqtt(m) => Some(m),
            PointAddress::Modbus(_) | PointAddress::Opcua(_) => None,
        }
    }

    /// The OPC UA node, if this is an OPC UA point.
    pub fn opcua(&self) -> Option<&OpcuaAddress> {
        match &self.address {
            PointAddress::Opcua(o) => Some(o),
            PointAddress::Modbus(_) | PointAddress::Mqtt(_) => None,
        }
    }
}

/// Where to publish: `mqtt://host:port/topic/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl MqttTarget {
    /// Parses `mqtt://host[:port]/prefix` (port 1883 by default).
    pub fn parse(url: &str) -> Result<Self, String> {
        use adit_core::url::{Scheme, Url};
        let u = Url::parse(url, &[Scheme::Mqtt])
            .map_err(|e| format!("{e} (TLS brokers are not supported for alerts yet)"))?;
        let prefix = u.path.trim_matches('/');
        if prefix.is_empty() || prefix.contains(['+', '#']) {
            return Err(format!(
                "{url:?} needs a topic prefix without wildcards, e.g. mqtt://broker:1883/adit/alerts"
            ));
        }
        Ok(Self {
            host: u.host,
            port: u.port,
            prefix: prefix.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_port_and_bad_ones_say_why() {
        assert_eq!(
            MqttTarget::parse("mqtt://broker/adit/alerts").unwrap(),
            MqttTarget {
                host: "broker".into(),
                port: 1883,
                prefix: "adit/alerts".into()
            }
        );
        assert_eq!(
            MqttTarget::parse("mqtt://10.0.0.2:1884/a/").unwrap().port,
            1884
        );
        for bad in [
            "http://x/a",
            "mqtt://x",
            "mqtt://x/a/#",
            "mqtt://:1883/a",
            "mqtt://x:99999/a",
        ] {
            assert!(MqttTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
