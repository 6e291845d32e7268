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
