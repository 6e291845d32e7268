//! The Modbus keys of `[[device]]` and `[[device.point]]` (unchanged for
//! users: `address`, `unit_id`, `serial_port`, `baud_rate`, … on the device;
//! `table`, `address`, `type`, `order`, `bit`, `length` on a point), and the
//! checks across devices that share a connection or a serial line.

use std::collections::HashMap;
use std::time::Duration;

use super::Problems;
use crate::model::{
    DataType, DeviceClock, DeviceConfig, ModbusAddress, ModbusSettings, Parity, PointConfig,
    PollPhase, Protocol, SerialConfig, Table, WordOrder,
};
use crate::raw::{RawDevice, RawDeviceClock, RawPoint};

/// What a Modbus device's keys gave: its settings and its default order.
pub(super) struct ModbusDevice {
    pub settings: ModbusSettings,
    pub order: WordOrder,
}

/// The Modbus keys of a `[[device]]`.
pub(super) fn validate_device(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    protocol: Protocol,
) -> ModbusDevice {
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
    let order = parse_order(p, &format!("{path}.order"), rd.order.as_deref()).unwrap_or_default();
    let max_registers_per_read = p.int_in(
        &format!("{path}.max_registers_per_read"),
        rd.max_registers_per_read,
        125,
        1,
        125,
    ) as u16;
    let max_gap = p.int_in(&format!("{path}.max_gap"), rd.max_gap, 0, 0, 124) as u16;
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
    let poll_phase = match rd.poll_phase.as_deref().unwrap_or("aligned") {
        "aligned" => PollPhase::Aligned,
        "spread" => PollPhase::Spread,
        other => {
            p.push(
                format!("{path}.poll_phase"),
                format!("unknown poll_phase {other:?}; expected aligned or spread"),
            );
            PollPhase::Aligned
        }
    };
    ModbusDevice {
        settings: ModbusSettings {
            poll_phase,
            address,
            serial,
            unit_id,
            max_registers_per_read,
            max_gap,
            retries,
            breaker_failures,
            inter_frame_delay,
            no_read_ranges,
            clock: rd
                .clock
                .as_ref()
                .map(|rc| validate_clock(p, &format!("{path}.clock"), rc, order)),
        },
        order,
    }
}

/// Checks of a device's points against its settings: no point wider than a
/// read, none in a no-read range.
pub(super) fn check_points(
    p: &mut Problems,
    path: &str,
    m: &ModbusSettings,
    points: &[PointConfig],
) {
    let (max_registers_per_read, no_read_ranges) = (m.max_registers_per_read, &m.no_read_ranges);
    for (i, point) in points.iter().enumerate() {
        let Some(point) = point.modbus() else {
            continue;
        };
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
}

/// The Modbus keys of a point: table, address, type, order, bit, length.
pub(super) fn validate_point(
    p: &mut Problems,
    path: &str,
    rp: &RawPoint,
    device_order: WordOrder,
) -> ModbusAddress {
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
    ModbusAddress {
        table,
        address,
        data_type,
        order,
        bit,
    }
}

/// Devices on one serial port share the line, so they must agree on its
/// settings; devices at one TCP address share the connection, so they must
/// agree on its framing.
pub(super) fn check_shared_connections(p: &mut Problems, devices: &[DeviceConfig]) {
    let mut first_on_port: HashMap<&str, usize> = HashMap::new();
    let mut first_at_address: HashMap<&str, usize> = HashMap::new();
    let modbus = |i: usize| devices.get(i).and_then(DeviceConfig::modbus);
    for (i, d) in devices.iter().enumerate() {
        let Some(m) = d.modbus() else {
            continue;
        };
        if let Some(serial) = &m.serial {
            match first_on_port.get(serial.port.as_str()) {
                Some(&j) if modbus(j).and_then(|o| o.serial.as_ref()) != Some(serial) => p.push(
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
        } else if !m.address.is_empty() {
            match first_at_address.get(m.address.as_str()) {
                Some(&j) if devices[j].protocol != d.protocol => p.push(
                    format!("device[{i}].protocol"),
                    format!(
                        "{} is also used by device[{j}] with protocol {}; one connection has one framing",
                        m.address,
                        devices[j].protocol.name()
                    ),
                ),
                Some(_) => {}
                None => {
                    first_at_address.insert(m.address.as_str(), i);
                }
            }
        }
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
