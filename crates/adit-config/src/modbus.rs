//! The Modbus part of the config: a device's connection and planning
//! settings, a point's register address and encoding, and the types they
//! use (tables, data types, word orders, serial lines, the device clock).

use std::time::Duration;

/// A Modbus device's own settings (`[[device]]` with a `modbus_*` protocol).
#[derive(Debug, Clone)]
pub struct ModbusSettings {
    /// `host:port` as written (TCP transports); resolved at connect time so
    /// DNS changes are seen. Empty for `modbus_rtu`.
    pub address: String,
    /// Serial settings (`modbus_rtu` only).
    pub serial: Option<SerialConfig>,
    pub unit_id: u8,
    pub max_registers_per_read: u16,
    pub max_gap: u16,
    /// Extra attempts of a read after a timeout or link error (each after a
    /// fresh connection), before its points are marked `Bad(CommFailure)`.
    pub retries: u8,
    /// Consecutive failed polls that open the device's circuit breaker.
    pub breaker_failures: u32,
    /// Silence before each request on the connection (RTU: at least 3.5 chars).
    pub inter_frame_delay: Duration,
    /// Address ranges (inclusive) that reads must never touch.
    pub no_read_ranges: Vec<(u16, u16)>,
    /// Registers with the device's own clock; when set, the readings of each
    /// poll carry it as their source timestamp (so a device whose RTC reset
    /// to 1970 is seen, flagged and alerted on).
    pub clock: Option<DeviceClock>,
    /// Where in each interval this device is polled.
    pub poll_phase: PollPhase,
}

/// Where in its interval a device is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollPhase {
    /// At whole multiples of the interval on the wall clock (every second on
    /// the second, every 250 ms on the quarter): devices that share an
    /// interval poll together, so one wake-up, one spool record, one fsync
    /// and one database request serve all of them.
    Aligned,
    /// At a fixed offset derived from the device id: devices are spread over
    /// the interval (a steady flow instead of a burst per interval).
    Spread,
}

/// Where a Modbus point is and how its registers encode it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModbusAddress {
    pub table: Table,
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// For `bool` from a register: the bit (0 = least significant).
    pub bit: Option<u8>,
}

impl ModbusAddress {
    /// Registers (or bits) this point occupies from `address`.
    pub fn width(&self) -> u16 {
        if self.table.is_bit_table() {
            1
        } else {
            self.data_type.register_count()
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

/// The register vocabulary lives with the reading model in `adit-core`, so
/// that the pure Modbus codec and planner use their own types, not config
/// types; the config turns TOML into them.
pub use adit_core::modbus::{DataType, DeviceClock, Table, WordOrder};
