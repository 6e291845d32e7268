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
    Config, DataType, DeviceConfig, HttpConfig, PipelineConfig, PointConfig, Protocol, SinksConfig,
    SqliteSinkConfig, Table, WordOrder,
};
use crate::raw::{RawConfig, RawDevice, RawPoint};

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
    let sinks = SinksConfig {
        sqlite: SqliteSinkConfig {
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
                "500ms",
                true,
            ),
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

    if p.0.is_empty() {
        Ok(Config {
            site,
            data_dir,
            http,
            pipeline,
            sinks,
            devices,
        })
    } else {
        Err(p.0)
    }
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
        Some("modbus_tcp") | None => Protocol::ModbusTcp,
        Some(other) => {
            p.push(
                format!("{path}.protocol"),
                format!("unknown protocol {other:?}; expected \"modbus_tcp\""),
            );
            Protocol::ModbusTcp
        }
    };
    let address = match p.required(&format!("{path}.address"), rd.address.as_deref()) {
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
    };
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
    let points = rd
        .point
        .iter()
        .enumerate()
        .map(|(i, rp)| validate_point(p, &format!("{path}.point[{i}]"), rp, order))
        .collect();
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
        description: rd.description.clone().unwrap_or_default(),
        points,
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

fn validate_point(
    p: &mut Problems,
    path: &str,
    rp: &RawPoint,
    device_order: WordOrder,
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
        Some(t) => DataType::ALL.into_iter().find(|d| d.name() == t).unwrap_or_else(|| {
            p.push(format!("{path}.type"), format!("unknown type {t:?}; expected one of bool, u16, i16, u32, i32, u64, i64, f32, f64"));
            DataType::U16
        }),
    };
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
        description: rp.description.clone().unwrap_or_default(),
    }
}
