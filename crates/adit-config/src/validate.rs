//! Raw config → validated [`Config`], collecting every error with its key path.
//!
//! The validator never stops at the first problem: each field is checked on its
//! own, and a field that fails gets a placeholder so that checks of the other
//! fields still run. Errors carry key paths (`device[0].point[2].address`); the
//! caller turns paths into lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::human::parse_duration;
use crate::model::{
    AlertingConfig, AuditConfig, Config, ConfigOrigin, DataType, DeviceClock, DeviceConfig,
    FsyncSetting, HttpConfig, MqttTarget, Parity, PipelineConfig, PointConfig, Protocol,
    QuestDbSinkConfig, RuleConfig, RuleKind, Secret, SelfHealthConfig, SerialConfig, SinksConfig,
    SpoolSettings, SqliteSinkConfig, Table, WhenFullPolicy, WordOrder,
};
use crate::raw::{RawConfig, RawDevice, RawDeviceClock, RawPoint, RawSelfHealth};

/// One problem found by validation: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        path: &str,
        raw: Option<&str>,
        default: &str,
        positive: bool,
    ) -> Duration {
        let text = raw.unwrap_or(default);
        match parse_duration(text) {
            Ok(d) if positive && d.is_zero() => {
                self.push(path, format!("must be greater than zero, got {text:?}"));
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.push(path, e);
                Duration::from_secs(1)
            }
        }
    }

    fn int_in(&mut self, path: &str, raw: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        let v = raw.unwrap_or(default);
        if (min..=max).contains(&v) {
            v
        } else {
            self.push(path, format!("{v} is out of range {min}..={max}"));
            default
        }
    }

    fn required<'a>(&mut self, path: &str, raw: Option<&'a str>) -> Option<&'a str> {
        if raw.is_none() {
            self.push(path, "is required");
        }
        raw
    }
}

/// Validates a raw config; `Err` holds every problem found.
pub fn validate(raw: &RawConfig) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let site = raw.site.clone().unwrap_or_else(|| "adit".to_string());
    let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or("./adit-data"));

    let http = {
        let listen = raw
            .http
            .as_ref()
            .and_then(|h| h.listen.as_deref())
            .unwrap_or("127.0.0.1:9464");
        let listen = if listen == "off" {
            None
        } else {
            let parsed = listen.parse::<SocketAddr>().ok();
            if parsed.is_none() {
                p.push(
                    "http.listen",
                    format!("{listen:?} is not an IP:port address (or \"off\")"),
                );
            }
            parsed
        };
        HttpConfig { listen }
    };

    let rp = raw.pipeline.as_ref();
    let pipeline = PipelineConfig {
        channel_capacity: p.int_in(
            "pipeline.channel_capacity",
            rp.and_then(|r| r.channel_capacity),
            256,
            1,
            1 << 20,
        ) as usize,
        max_future_skew: p.duration(
            "pipeline.max_future_skew",
            rp.and_then(|r| r.max_future_skew.as_deref()),
            "5m",
            false,
        ),
        max_age: p.duration(
            "pipeline.max_age",
            rp.and_then(|r| r.max_age.as_deref()),
            "1d",
            true,
        ),
    };

    let rs = raw.sink.as_ref().and_then(|s| s.sqlite.as_ref());
    let sqlite_path = rs.and_then(|s| s.path.as_deref()).unwrap_or("readings.db");
    let sqlite = SqliteSinkConfig {
        path: resolve_in(&data_dir, sqlite_path),
        batch_max_rows: p.int_in(
            "sink.sqlite.batch_max_rows",
            rs.and_then(|s| s.batch_max_rows),
            5000,
            1,
            1_000_000,
        ) as usize,
        batch_max_delay: p.duration(
            "sink.sqlite.batch_max_delay",
            rs.and_then(|s| s.batch_max_delay.as_deref()),
            "100ms",
            true,
        ),
    };
    let questdb = raw
        .sink
        .as_ref()
        .and_then(|s| s.questdb.as_ref())
        .map(|q| QuestDbSinkConfig {
            conf: Secret::new(match p.required("sink.questdb.conf", q.conf.as_deref()) {
                Some(text) => expand_env(&mut p, "sink.questdb.conf", text),
                None => String::new(),
            }),
            table: q.table.clone().unwrap_or_else(|| "readings".into()),
            batch_max_rows: p.int_in(
                "sink.questdb.batch_max_rows",
                q.batch_max_rows,
                10_000,
                1,
                1_000_000,
            ) as usize,
            batch_max_delay: p.duration(
                "sink.questdb.batch_max_delay",
                q.batch_max_delay.as_deref(),
                "100ms",
                true,
            ),
        });
    let sqlite_enabled = rs.and_then(|s| s.enabled).unwrap_or(true);
    if !sqlite_enabled && questdb.is_none() {
        p.push(
            "sink.sqlite.enabled",
            "no sink left: enable sqlite or configure [sink.questdb]",
        );
    }
    let sinks = SinksConfig {
        sqlite: sqlite_enabled.then_some(sqlite),
        questdb,
    };

    let spool = validate_spool(&mut p, raw.spool.as_ref(), &data_dir);
    let ra = raw.audit.as_ref();
    let audit = AuditConfig {
        dir: resolve_in(
            &data_dir,
            ra.and_then(|a| a.dir.as_deref()).unwrap_or("audit"),
        ),
        max_file_size: match crate::human::parse_size(
            ra.and_then(|a| a.max_file_size.as_deref())
                .unwrap_or("16 MiB"),
        ) {
            Ok(n) if n >= 4096 => n,
            Ok(n) => {
                p.push(
                    "audit.max_file_size",
                    format!("{n} bytes is below the minimum of 4096"),
                );
                4096
            }
            Err(e) => {
                p.push("audit.max_file_size", e);
                4096
            }
        },
    };

    let mut device_ids: HashMap<&str, usize> = HashMap::new();
    let mut point_ids: HashMap<&str, String> = HashMap::new();
    let mut devices = Vec::with_capacity(raw.device.len());
    for (di, rd) in raw.device.iter().enumerate() {
        let path = format!("device[{di}]");
        if let Some(id) = rd.id.as_deref() {
            if let Some(first) = device_ids.insert(id, di) {
                p.push(
                    format!("{path}.id"),
                    format!("duplicate device id {id:?} (first defined at device[{first}])"),
                );
            }
        }
        let device = validate_device(&mut p, &path, rd);
        for (pi, rpt) in rd.point.iter().enumerate() {
            if let Some(id) = rpt.id.as_deref() {
                let here = format!("{path}.point[{pi}]");
                if let Some(first) = point_ids.get(id) {
                    p.push(
                        format!("{here}.id"),
                        format!("duplicate point id {id:?} (first defined at {first})"),
                    );
                } else {
                    point_ids.insert(id, here);
                }
            }
        }
        devices.push(device);
    }

    check_shared_connections(&mut p, &devices);
    let rules: Vec<RuleConfig> = raw
        .rule
        .iter()
        .enumerate()
        .map(|(i, r)| validate_rule(&mut p, &format!("rule[{i}]"), r))
        .collect();
    let mut rule_names: HashMap<&str, usize> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        if let Some(first) = rule_names.insert(r.name.as_str(), i) {
            p.push(
                format!("rule[{i}].name"),
                format!("duplicate rule name {:?} (first at rule[{first}])", r.name),
            );
        }
    }
    let ral = raw.alerting.as_ref();
    let urls = |p: &mut Problems, key: &str, list: Option<&Vec<String>>| -> Vec<String> {
        let list = list.cloned().unwrap_or_default();
        for (i, u) in list.iter().enumerate() {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                p.push(
                    format!("alerting.{key}[{i}]"),
                    format!("{u:?} must be an http:// or https:// URL"),
                );
            }
        }
        list
    };
    let alerting = AlertingConfig {
        alertmanagers: urls(
            &mut p,
            "alertmanager",
            ral.and_then(|a| a.alertmanager.as_ref()),
        ),
        webhooks: urls(&mut p, "webhook", ral.and_then(|a| a.webhook.as_ref())),
        mqtt: ral
            .and_then(|a| a.mqtt.as_ref())
            .map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, u)| {
                        MqttTarget::parse(u)
                            .map_err(|e| p.push(format!("alerting.mqtt[{i}]"), e))
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ca_file: ral.and_then(|a| a.ca_file.as_deref()).map(|f| {
            let path = resolve_in(&data_dir, f);
            if !path.is_file() {
                p.push(
                    "alerting.ca_file",
                    format!(
                        "{} is not a readable file (PEM certificates of the CAs to trust)",
                        path.display()
                    ),
                );
            }
            path
        }),
        resend_interval: p.duration(
            "alerting.resend_interval",
            ral.and_then(|a| a.resend_interval.as_deref()),
            "30s",
            true,
        ),
        heartbeat: ral.and_then(|a| a.heartbeat).unwrap_or(true),
        self_health: validate_self_health(
            &mut p,
            ral.and_then(|a| a.self_health.as_ref())
                .unwrap_or(&RawSelfHealth::default()),
        ),
    };

    if p.0.is_empty() {
        Ok(Config {
            origin: ConfigOrigin::default(),
            site,
            data_dir,
            http,
            pipeline,
            sinks,
            spool,
            audit,
            devices,
            rules,
            alerting,
        })
    } else {
        Err(p.0)
    }
}

/// Devices on one serial port share the line, so they must agree on its
/// settings; devices at one TCP address share the connection, so they must
/// agree on its framing.
fn check_shared_connections(p: &mut Problems, devices: &[DeviceConfig]) {
    let mut first_on_port: HashMap<&str, usize> = HashMap::new();
    let mut first_at_address: HashMap<&str, usize> = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        if let Some(serial) = &d.serial {
            match first_on_port.get(serial.port.as_str()) {
                Some(&j) if devices[j].serial.as_ref() != Some(serial) => p.push(
                    format!("device[{i}].serial_port"),
                    format!(
                        "{} is shared with device[{j}] but its baud_rate, parity, data_bits or stop_bits differ",
                        serial.port
                    ),
                ),
                Some(_) => {}
                None => {
                    first_on_port.insert(serial.port.as_str(), i);
                }
            }
        } else if !d.address.is_empty() {
            match first_at_address.get(d.address.as_str()) {
                Some(&j) if devices[j].protocol != d.protocol => p.push(
                    format!("device[{i}].protocol"),
                    format!(
                        "{} is also used by device[{j}] with protocol {}; one connection has one framing",
                        d.address,
                        devices[j].protocol.name()
                    ),
                ),
                Some(_) => {}
                None => {
                    first_at_address.insert(d.address.as_str(), i);
                }
            }
        }
    }
}

fn validate_rule(p: &mut Problems, path: &str, r: &crate::raw::RawRule) -> RuleConfig {
    let name = validate_id(p, &format!("{path}.name"), r.name.as_deref());
    let points = p
        .required(&format!("{path}.points"), r.points.as_deref())
        .unwrap_or("*")
        .to_string();
    let need = |p: &mut Problems, key: &str, v: Option<f64>| -> f64 {
        match v {
            Some(x) if x.is_finite() => x,
            Some(x) => {
                p.push(
                    format!("{path}.{key}"),
                    format!("{x} must be a finite number"),
                );
                0.0
            }
            None => {
                p.push(format!("{path}.{key}"), "is required for this kind");
                0.0
            }
        }
    };
    let kind = match p.required(&format!("{path}.kind"), r.kind.as_deref()) {
        Some("above") => {
            let raise = need(p, "raise", r.raise);
            let clear = r.clear.unwrap_or(raise);
            if clear > raise {
                p.push(
                    format!("{path}.clear"),
                    format!("{clear} must not be above raise = {raise}"),
                );
            }
            RuleKind::Above { raise, clear }
        }
        Some("below") => {
            let raise = need(p, "raise", r.raise);
            let clear = r.clear.unwrap_or(raise);
            if clear < raise {
                p.push(
                    format!("{path}.clear"),
                    format!("{clear} must not be below raise = {raise}"),
                );
            }
            RuleKind::Below { raise, clear }
        }
        Some("rate") => RuleKind::Rate {
            max_per_second: need(p, "max_per_second", r.max_per_second).abs(),
        },
        Some("flatline") => RuleKind::Flatline {
            samples: p.int_in(&format!("{path}.samples"), r.samples, 30, 2, 1_000_000) as u32,
        },
        Some("stale") | None => RuleKind::Stale,
        Some("bad_quality") => RuleKind::BadQuality,
        Some("clock") => RuleKind::Clock {
            max_skew: p.duration(
                &format!("{path}.max_skew"),
                r.max_skew.as_deref(),
                "5m",
                true,
            ),
        },
        Some("device_down") => RuleKind::DeviceDown,
        Some(other) => {
            p.push(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected above, below, rate, flatline, stale, bad_quality, clock or device_down"),
            );
            RuleKind::Stale
        }
    };
    let severity = r.severity.clone().unwrap_or_else(|| "warning".into());
    if !matches!(severity.as_str(), "info" | "warning" | "critical") {
        p.push(
            format!("{path}.severity"),
            format!("{severity:?}; expected info, warning or critical"),
        );
    }
    RuleConfig {
        name,
        points,
        kind,
        hold: p.duration(&format!("{path}.for"), r.hold.as_deref(), "0s", false),
        severity,
        check_first: r.check_first.clone().unwrap_or_default(),
        runbook: r.runbook.clone(),
    }
}

fn validate_spool(
    p: &mut Problems,
    raw: Option<&crate::raw::RawSpool>,
    data_dir: &Path,
) -> SpoolSettings {
    let size = |p: &mut Problems, key: &str, value: Option<&str>, default: &str, min: u64| {
        let text = value.unwrap_or(default);
        match crate::human::parse_size(text) {
            Ok(n) if n >= min => n,
            Ok(n) => {
                p.push(
                    format!("spool.{key}"),
                    format!("{n} bytes is below the minimum of {min}"),
                );
                min
            }
            Err(e) => {
                p.push(format!("spool.{key}"), e);
                min
            }
        }
    };
    let segment_size = size(
        p,
        "segment_size",
        raw.and_then(|r| r.segment_size.as_deref()),
        "64 MiB",
        64 * 1024,
    );
    let max_size = size(
        p,
        "max_size",
        raw.and_then(|r| r.max_size.as_deref()),
        "2 GiB",
        1024 * 1024,
    );
    if max_size < 2 * segment_size {
        p.push(
            "spool.max_size",
            "must be at least twice spool.segment_size",
        );
    }
    let when_full = match raw
        .and_then(|r| r.when_full.as_deref())
        .unwrap_or("drop_oldest")
    {
        "block" => WhenFullPolicy::Block,
        "drop_oldest" => WhenFullPolicy::DropOldest,
        "drop_newest" => WhenFullPolicy::DropNewest,
        other => {
            p.push(
                "spool.when_full",
                format!("unknown policy {other:?}; expected block, drop_oldest or drop_newest"),
            );
            WhenFullPolicy::DropOldest
        }
    };
    let interval = p.duration(
        "spool.fsync_interval",
        raw.and_then(|r| r.fsync_interval.as_deref()),
        "100ms",
        true,
    );
    let fsync = match raw.and_then(|r| r.fsync.as_deref()).unwrap_or("interval") {
        "always" => FsyncSetting::Always,
        "interval" => FsyncSetting::Interval(interval),
        "never" => FsyncSetting::Never,
        other => {
            p.push(
                "spool.fsync",
                format!("unknown policy {other:?}; expected always, interval or never"),
            );
            FsyncSetting::Interval(interval)
        }
    };
    SpoolSettings {
        dir: resolve_in(
            data_dir,
            raw.and_then(|r| r.dir.as_deref()).unwrap_or("spool"),
        ),
        segment_size,
        max_size,
        when_full,
        fsync,
    }
}

/// Expands `${NAME}` from the environment (for secrets such as passwords in
/// connection strings). A missing variable is a config error that names the
/// variable, never its value.
fn expand_env(p: &mut Problems, path: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            p.push(path, "unclosed ${ in value");
            return out;
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(value) => out.push_str(&value),
            Err(_) => p.push(path, format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn resolve_in(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

fn validate_id(p: &mut Problems, path: &str, id: Option<&str>) -> String {
    let Some(id) = p.required(path, id) else {
        return String::new();
    };
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/'));
    if !ok {
        p.push(
            path,
            format!("{id:?} must be 1-128 characters of A-Z a-z 0-9 _ . - : /"),
        );
    }
    id.to_string()
}

fn validate_device(p: &mut Problems, path: &str, rd: &RawDevice) -> DeviceConfig {
    let id = validate_id(p, &format!("{path}.id"), rd.id.as_deref());
    let protocol = match p.required(&format!("{path}.protocol"), rd.protocol.as_deref()) {
        None => Protocol::ModbusTcp,
        Some(name) => Protocol::ALL.into_iter().find(|pr| pr.name() == name).unwrap_or_else(|| {
            p.push(
                format!("{path}.protocol"),
                format!("unknown protocol {name:?}; expected \"modbus_tcp\", \"modbus_rtu_over_tcp\" or \"modbus_rtu\""),
            );
            Protocol::ModbusTcp
        }),
    };
    let address = if protocol == Protocol::ModbusRtu {
        if rd.address.is_some() {
            p.push(
                format!("{path}.address"),
                "a modbus_rtu device has serial_port, not address",
            );
        }
        String::new()
    } else {
        match p.required(&format!("{path}.address"), rd.address.as_deref()) {
            Some(a) => {
                let port_ok = a
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    p.push(
                        format!("{path}.address"),
                        format!("{a:?} must be host:port, e.g. \"10.0.0.5:502\""),
                    );
                }
                a.to_string()
            }
            None => String::new(),
        }
    };
    let serial = validate_serial(p, path, rd, protocol);
    let unit_id = p.int_in(&format!("{path}.unit_id"), rd.unit_id, 1, 0, 255) as u8;
    let poll_interval = p.duration(
        &format!("{path}.poll_interval"),
        rd.poll_interval.as_deref(),
        "1s",
        true,
    );
    let timeout = p.duration(
        &format!("{path}.timeout"),
        rd.timeout.as_deref(),
        "1s",
        true,
    );
    let order = parse_order(p, &format!("{path}.order"), rd.order.as_deref()).unwrap_or_default();
    let max_registers_per_read = p.int_in(
        &format!("{path}.max_registers_per_read"),
        rd.max_registers_per_read,
        125,
        1,
        125,
    ) as u16;
    let max_gap = p.int_in(&format!("{path}.max_gap"), rd.max_gap, 0, 0, 124) as u16;
    let reconnect_min = p.duration(
        &format!("{path}.reconnect_min"),
        rd.reconnect_min.as_deref(),
        "250ms",
        true,
    );
    let reconnect_max = p.duration(
        &format!("{path}.reconnect_max"),
        rd.reconnect_max.as_deref(),
        "30s",
        true,
    );
    let retries = p.int_in(&format!("{path}.retries"), rd.retries, 0, 0, 5) as u8;
    let breaker_failures = p.int_in(
        &format!("{path}.breaker_failures"),
        rd.breaker_failures,
        3,
        1,
        100,
    ) as u32;
    let min_gap = serial
        .as_ref()
        .map_or(Duration::ZERO, SerialConfig::min_inter_frame_delay);
    let inter_frame_delay = if let Some(raw) = rd.inter_frame_delay.as_deref() {
        let d = p.duration(&format!("{path}.inter_frame_delay"), Some(raw), "0s", false);
        if d < min_gap {
            p.push(
                format!("{path}.inter_frame_delay"),
                format!("{d:?} is shorter than 3.5 character times on this line ({min_gap:?})"),
            );
        }
        d
    } else {
        min_gap
    };
    let no_read_ranges = validate_ranges(
        p,
        &format!("{path}.no_read_ranges"),
        rd.no_read_ranges.as_deref(),
    );
    if reconnect_min > reconnect_max {
        p.push(
            format!("{path}.reconnect_min"),
            "must not be greater than reconnect_max",
        );
    }
    if rd.point.is_empty() {
        p.push(
            path.to_string(),
            "device has no points; add [[device.point]] tables",
        );
    }
    let points: Vec<PointConfig> = rd
        .point
        .iter()
        .enumerate()
        .map(|(i, rp)| validate_point(p, &format!("{path}.point[{i}]"), rp, order, poll_interval))
        .collect();
    for (i, point) in points.iter().enumerate() {
        let (start, end) = (
            u32::from(point.address),
            u32::from(point.address) + u32::from(point.width()),
        );
        if !point.table.is_bit_table() && point.width() > max_registers_per_read {
            p.push(
                format!("{path}.point[{i}].type"),
                format!("{} registers wide, more than max_registers_per_read = {max_registers_per_read}", point.width()),
            );
        }
        if let Some((lo, hi)) = no_read_ranges
            .iter()
            .find(|(lo, hi)| start <= u32::from(*hi) && u32::from(*lo) < end)
        {
            p.push(
                format!("{path}.point[{i}].address"),
                format!("{} lies in no_read_ranges [{lo}, {hi}]", point.address),
            );
        }
    }
    DeviceConfig {
        id,
        protocol,
        address,
        unit_id,
        poll_interval,
        timeout,
        max_registers_per_read,
        max_gap,
        reconnect_min,
        reconnect_max,
        retries,
        breaker_failures,
        inter_frame_delay,
        no_read_ranges,
        serial,
        description: rd.description.clone().unwrap_or_default(),
        clock: rd
            .clock
            .as_ref()
            .map(|rc| validate_clock(p, &format!("{path}.clock"), rc, order)),
        points,
    }
}

fn validate_self_health(p: &mut Problems, r: &RawSelfHealth) -> SelfHealthConfig {
    let path = "alerting.self_health";
    let defaults = SelfHealthConfig::default();
    let spool_fill = r.spool_fill.unwrap_or(defaults.spool_fill);
    if !(spool_fill > 0.0 && spool_fill <= 1.0) {
        p.push(
            format!("{path}.spool_fill"),
            format!("{spool_fill} must be a fraction of the spool bound, above 0 and at most 1 (e.g. 0.8)"),
        );
    }
    // Durations given are checked; absent ones take the model's defaults.
    let dur = |p: &mut Problems, key: &str, raw: Option<&String>, default: Duration| {
        raw.map_or(default, |raw| {
            p.duration(&format!("{path}.{key}"), Some(raw), "1s", true)
        })
    };
    SelfHealthConfig {
        spool_fill,
        sink_failing_for: dur(
            p,
            "sink_failing_for",
            r.sink_failing_for.as_ref(),
            defaults.sink_failing_for,
        ),
        restarts: p.int_in(
            &format!("{path}.restarts"),
            r.restarts,
            i64::try_from(defaults.restarts).unwrap_or(3),
            1,
            1000,
        ) as u64,
        restart_window: dur(
            p,
            "restart_window",
            r.restart_window.as_ref(),
            defaults.restart_window,
        ),
        dropping_hold: dur(
            p,
            "dropping_hold",
            r.dropping_hold.as_ref(),
            defaults.dropping_hold,
        ),
    }
}

fn validate_clock(
    p: &mut Problems,
    path: &str,
    rc: &RawDeviceClock,
    device_order: WordOrder,
) -> DeviceClock {
    let table = match rc.table.as_deref() {
        Some("holding") | None => Table::HoldingRegister,
        Some("input") => Table::InputRegister,
        Some(other) => {
            p.push(
                format!("{path}.table"),
                format!("unknown table {other:?}; a clock is in holding or input registers"),
            );
            Table::HoldingRegister
        }
    };
    let address = p.int_in(&format!("{path}.address"), rc.address, 0, 0, 65_532) as u16;
    if rc.address.is_none() {
        p.push(
            format!("{path}.address"),
            "missing; the first register of the clock",
        );
    }
    let data_type = match rc.data_type.as_deref().unwrap_or("u32") {
        "u32" => DataType::U32,
        "i32" => DataType::I32,
        "u64" => DataType::U64,
        "i64" => DataType::I64,
        other => {
            p.push(
                format!("{path}.type"),
                format!("unknown clock type {other:?}; expected u32, i32, u64 or i64"),
            );
            DataType::U32
        }
    };
    let micros_per_count = match rc.unit.as_deref().unwrap_or("s") {
        "s" => 1_000_000,
        "ms" => 1_000,
        other => {
            p.push(
                format!("{path}.unit"),
                format!("unknown clock unit {other:?}; expected \"s\" (Unix seconds) or \"ms\""),
            );
            1_000_000
        }
    };
    DeviceClock {
        table,
        address,
        data_type,
        order: parse_order(p, &format!("{path}.order"), rc.order.as_deref())
            .unwrap_or(device_order),
        micros_per_count,
    }
}

fn parse_order(p: &mut Problems, path: &str, raw: Option<&str>) -> Option<WordOrder> {
    let raw = raw?;
    let order = WordOrder::parse(raw);
    if order.is_none() {
        p.push(
            path,
            format!("unknown order {raw:?}; expected one of ABCD, CDAB, BADC, DCBA"),
        );
    }
    order
}

fn validate_serial(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    protocol: Protocol,
) -> Option<SerialConfig> {
    let given = [
        ("serial_port", rd.serial_port.is_some()),
        ("baud_rate", rd.baud_rate.is_some()),
        ("parity", rd.parity.is_some()),
        ("data_bits", rd.data_bits.is_some()),
        ("stop_bits", rd.stop_bits.is_some()),
    ];
    if protocol != Protocol::ModbusRtu {
        for (key, present) in given {
            if present {
                p.push(
                    format!("{path}.{key}"),
                    "serial settings apply to protocol = \"modbus_rtu\" only",
                );
            }
        }
        return None;
    }
    let port = p
        .required(&format!("{path}.serial_port"), rd.serial_port.as_deref())
        .unwrap_or_default()
        .to_string();
    let baud_rate = p.int_in(
        &format!("{path}.baud_rate"),
        rd.baud_rate,
        9600,
        300,
        4_000_000,
    ) as u32;
    let parity = match rd.parity.as_deref().unwrap_or("even") {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => {
            p.push(
                format!("{path}.parity"),
                format!("unknown parity {other:?}; expected none, even or odd"),
            );
            Parity::Even
        }
    };
    let data_bits = p.int_in(&format!("{path}.data_bits"), rd.data_bits, 8, 7, 8) as u8;
    let stop_bits = p.int_in(&format!("{path}.stop_bits"), rd.stop_bits, 1, 1, 2) as u8;
    Some(SerialConfig {
        port,
        baud_rate,
        parity,
        data_bits,
        stop_bits,
    })
}

fn validate_ranges(p: &mut Problems, path: &str, raw: Option<&[Vec<i64>]>) -> Vec<(u16, u16)> {
    let mut ranges = Vec::new();
    for (i, r) in raw.unwrap_or_default().iter().enumerate() {
        match r.as_slice() {
            [lo, hi] if (0..=65535).contains(lo) && (0..=65535).contains(hi) && lo <= hi => {
                ranges.push((*lo as u16, *hi as u16));
            }
            _ => p.push(
                format!("{path}[{i}]"),
                format!("{r:?} must be [first, last] with 0 <= first <= last <= 65535"),
            ),
        }
    }
    ranges
}

fn validate_point(
    p: &mut Problems,
    path: &str,
    rp: &RawPoint,
    device_order: WordOrder,
    device_interval: Duration,
) -> PointConfig {
    let id = validate_id(p, &format!("{path}.id"), rp.id.as_deref());
    let table = match p.required(&format!("{path}.table"), rp.table.as_deref()) {
        Some("holding") | None => Table::HoldingRegister,
        Some("input") => Table::InputRegister,
        Some("coil") => Table::Coil,
        Some("discrete") => Table::DiscreteInput,
        Some(other) => {
            p.push(
                format!("{path}.table"),
                format!("unknown table {other:?}; expected holding, input, coil or discrete"),
            );
            Table::HoldingRegister
        }
    };
    let data_type = match rp.data_type.as_deref() {
        None if table.is_bit_table() => DataType::Bool,
        None => DataType::U16,
        Some("string") => match rp.length {
            Some(n) if (1..=125).contains(&n) => DataType::String(n as u8),
            Some(n) => {
                p.push(format!("{path}.length"), format!("{n} is out of range 1..=125 registers"));
                DataType::String(1)
            }
            None => {
                p.push(format!("{path}.length"), "a string needs `length` in registers (two characters each)");
                DataType::String(1)
            }
        },
        Some(t) => DataType::ALL.into_iter().find(|d| d.name() == t).unwrap_or_else(|| {
            p.push(
                format!("{path}.type"),
                format!("unknown type {t:?}; expected one of bool, u16, i16, u32, i32, u64, i64, f32, f64, string"),
            );
            DataType::U16
        }),
    };
    if rp.length.is_some() && !matches!(data_type, DataType::String(_)) {
        p.push(
            format!("{path}.length"),
            "`length` applies only to type = \"string\"",
        );
    }
    let interval = p.duration(
        &format!("{path}.interval"),
        rp.interval.as_deref(),
        "1s",
        true,
    );
    let deadband = rp.deadband.filter(|d| {
        let ok = d.is_finite() && *d >= 0.0;
        if !ok {
            p.push(
                format!("{path}.deadband"),
                format!("{d} must be a finite number >= 0"),
            );
        }
        ok
    });
    let deadband_heartbeat = p.duration(
        &format!("{path}.deadband_heartbeat"),
        rp.deadband_heartbeat.as_deref(),
        "60s",
        true,
    );
    if rp.deadband_heartbeat.is_some() && rp.deadband.is_none() {
        p.push(
            format!("{path}.deadband_heartbeat"),
            "applies only with `deadband`",
        );
    }
    let interval = if rp.interval.is_some() {
        interval
    } else {
        device_interval
    };
    let stale_after = match rp.stale_after.as_deref() {
        Some(raw) => p.duration(&format!("{path}.stale_after"), Some(raw), "3s", true),
        None => interval * 3,
    };
    if stale_after < interval {
        p.push(format!("{path}.stale_after"), format!("{stale_after:?} is shorter than the poll interval {interval:?}: the point would be stale between polls"));
    }
    if table.is_bit_table() && data_type != DataType::Bool {
        p.push(
            format!("{path}.type"),
            format!(
                "{} table holds single bits; type must be bool, not {}",
                table.name(),
                data_type.name()
            ),
        );
    }
    let bit = rp
        .bit
        .map(|b| p.int_in(&format!("{path}.bit"), Some(b), 0, 0, 15) as u8);
    if !table.is_bit_table() && data_type == DataType::Bool && bit.is_none() {
        p.push(
            format!("{path}.bit"),
            "a bool read from a register needs `bit` (0-15)",
        );
    }
    if bit.is_some() && (table.is_bit_table() || data_type != DataType::Bool) {
        p.push(
            format!("{path}.bit"),
            "`bit` applies only to type = \"bool\" in a holding or input register",
        );
    }
    let width = if table.is_bit_table() {
        1
    } else {
        i64::from(data_type.register_count())
    };
    let address = match rp.address {
        None => {
            p.push(format!("{path}.address"), "is required");
            0
        }
        Some(a) if !(0..=65535).contains(&a) => {
            p.push(
                format!("{path}.address"),
                format!("{a} is out of range 0..=65535"),
            );
            0
        }
        Some(a) if a + width - 1 > 65535 => {
            p.push(
                format!("{path}.address"),
                format!("{a} + {width} registers runs past 65535"),
            );
            0
        }
        Some(a) => a as u16,
    };
    let order =
        parse_order(p, &format!("{path}.order"), rp.order.as_deref()).unwrap_or(device_order);
    let scale = rp.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        p.push(
            format!("{path}.scale"),
            format!("{scale} must be a finite, non-zero number"),
        );
    }
    let offset = rp.offset.unwrap_or(0.0);
    if !offset.is_finite() {
        p.push(
            format!("{path}.offset"),
            format!("{offset} must be a finite number"),
        );
    }
    let range = match rp.range.as_deref() {
        None => None,
        Some([lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Some((*lo, *hi)),
        Some(other) => {
            p.push(
                format!("{path}.range"),
                format!("{other:?} must be [min, max] with min < max"),
            );
            None
        }
    };
    PointConfig {
        id,
        table,
        address,
        data_type,
        order,
        bit,
        scale,
        offset,
        unit: rp.unit.clone().unwrap_or_default(),
        range,
        interval,
        deadband,
        deadband_heartbeat,
        stale_after,
        description: rp.description.clone().unwrap_or_default(),
    }
}
