//! The validated config: typed, complete, and consistent. Everything downstream
//! reads only these types; nothing re-parses strings after validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Capacity, in batches, of each channel between stages.
    pub channel_capacity: usize,
    /// A source timestamp further ahead of adit's clock than this is `ClockInvalid`.
    pub max_future_skew: Duration,
    /// A source timestamp older than this is `ClockInvalid`.
    pub max_age: Duration,
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
    /// Modbus TCP (MBAP framing) to `address`.
    ModbusTcp,
    /// Modbus RTU framing over a TCP connection (serial gateways in
    /// transparent mode).
    ModbusRtuOverTcp,
    /// Modbus RTU on a serial line.
    ModbusRtu,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [
        Protocol::ModbusTcp,
        Protocol::ModbusRtuOverTcp,
        Protocol::ModbusRtu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::ModbusTcp => "modbus_tcp",
            Protocol::ModbusRtuOverTcp => "modbus_rtu_over_tcp",
            Protocol::ModbusRtu => "modbus_rtu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Serial line settings of a `modbus_rtu` device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialConfig {
    pub port: String,
    pub baud_rate: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

impl SerialConfig {
    /// Modbus RTU's minimum silent interval between frames: 3.5 character
    /// times, and at least 1.75 ms above 19200 baud (Modbus over serial line
    /// spec, 2.5.1.1).
    pub fn min_inter_frame_delay(&self) -> Duration {
        let bits_per_char = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits);
        let t = Duration::from_secs_f64(
            3.5 * f64::from(bits_per_char) / f64::from(self.baud_rate.max(1)),
        );
        t.max(Duration::from_micros(1750))
    }
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub protocol: Protocol,
    /// `host:port` as written (TCP transports); resolved at connect time so
    /// DNS changes are seen. Empty for `modbus_rtu`.
    pub address: String,
    /// Serial settings (`modbus_rtu` only).
    pub serial: Option<SerialConfig>,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub max_registers_per_read: u16,
    pub max_gap: u16,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Extra attempts of a read after a timeout or link error (each after a
    /// fresh connection), before its points are marked `Bad(CommFailure)`.
    pub retries: u8,
    /// Consecutive failed polls that open the device's circuit breaker.
    pub breaker_failures: u32,
    /// Silence before each request on the connection (RTU: at least 3.5 chars).
    pub inter_frame_delay: Duration,
    /// Address ranges (inclusive) that reads must never touch.
    pub no_read_ranges: Vec<(u16, u16)>,
    pub description: String,
    /// Registers with the device's own clock; when set, the readings of each
    /// poll carry it as their source timestamp (so a device whose RTC reset
    /// to 1970 is seen, flagged and alerted on).
    pub clock: Option<DeviceClock>,
    pub points: Vec<PointConfig>,
}

/// Where and how a device exposes its clock: Unix time as an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceClock {
    pub table: Table,
    pub address: u16,
    /// u32, i32, u64 or i64.
    pub data_type: DataType,
    pub order: WordOrder,
    /// Microseconds per count: a million for seconds, a thousand for milliseconds.
    pub micros_per_count: i64,
}

/// The four Modbus register tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Table {
    pub fn is_bit_table(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete",
            Table::InputRegister => "input",
            Table::HoldingRegister => "holding",
        }
    }
}

/// How a point's registers are turned into a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// Fixed-length ASCII text of this many registers (two characters each).
    String(u8),
}

impl DataType {
    /// Registers occupied (bit tables: 1 bit).
    pub fn register_count(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String(n) => u16::from(n),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String(_) => "string",
        }
    }
    /// The numeric types (and bool), for tables and tests.
    pub const ALL: [DataType; 9] = [
        DataType::Bool,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];
}

/// Byte and word order of a multi-register value, named by where the bytes of
/// a big-endian `ABCD` value land on the wire. For 64-bit values the same four
/// names mean: `ABCD` = ABCDEFGH (big-endian), `CDAB` = GHEFCDAB (words
/// reversed), `BADC` = BADCFEHG (bytes swapped in each word), `DCBA` = HGFEDCBA
/// (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordOrder {
    #[default]
    Abcd,
    Cdab,
    Badc,
    Dcba,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    /// Registers are in little-endian order (least significant word first).
    pub fn words_swapped(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }
    /// Bytes inside each register are swapped (low byte first).
    pub fn bytes_swapped(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }
    pub fn name(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
            WordOrder::Badc => "BADC",
            WordOrder::Dcba => "DCBA",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        WordOrder::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone)]
pub struct PointConfig {
    pub id: String,
    pub table: Table,
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// For `bool` from a register: the bit (0 = least significant).
    pub bit: Option<u8>,
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
}

impl PointConfig {
    /// Registers (or bits) this point occupies from `address`.
    pub fn width(&self) -> u16 {
        if self.table.is_bit_table() {
            1
        } else {
            self.data_type.register_count()
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
