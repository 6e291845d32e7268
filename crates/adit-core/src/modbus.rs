//! The Modbus register vocabulary: tables, data types, byte/word orders and
//! a device's clock registers. Pure data, shared by the pure codec and
//! planner (`adit-modbus`) and the config that produces them; no I/O.

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
