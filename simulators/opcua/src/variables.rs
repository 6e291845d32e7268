//! The served variables: string node ids `Tunnel.<Bore>.<Signal>` in the
//! namespace [`NAMESPACE_URI`], each of one OPC UA built-in type, moved by
//! the Modbus simulator's tunnel model (one per bore).

use adit_sim_modbus::scenario::{Signal, SignalKind, TunnelModel};
use opcua::types::{DateTime, Variant};

/// The simulator's own namespace (its index differs between servers:
/// clients resolve it by this URI).
pub const NAMESPACE_URI: &str = "urn:adit:sim:tunnel";

/// The decoy namespace (see `SimOptions::decoy_namespace`).
pub const DECOY_NAMESPACE_URI: &str = "urn:adit:sim:decoy";

/// What every decoy variable holds: no tunnel sensor reads this.
pub const DECOY_VALUE: f64 = -7777.0;

/// The two bores.
pub const BORES: [&str; 2] = ["North", "South"];

/// The OPC UA built-in type a variable is served as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarType {
    Double,
    Float,
    Boolean,
    Int16,
    UInt32,
    Int64,
    UInt64,
    Byte,
    SByte,
    String,
    DateTime,
}

/// One variable of a bore.
#[derive(Clone, Copy, Debug)]
pub struct VarSpec {
    /// Last part of the node id (`Tunnel.North.<name>`).
    pub name: &'static str,
    pub var_type: VarType,
    pub kind: SignalKind,
    pub unit: &'static str,
}

const fn var(
    name: &'static str,
    var_type: VarType,
    kind: SignalKind,
    unit: &'static str,
) -> VarSpec {
    VarSpec {
        name,
        var_type,
        kind,
        unit,
    }
}

/// Every bore serves these.
pub const BORE_VARIABLES: [VarSpec; 14] = [
    var("CO", VarType::Double, SignalKind::Co, "ppm"),
    var("NO2", VarType::Double, SignalKind::No2, "ppm"),
    var("Visibility", VarType::Double, SignalKind::Visibility, "1/m"),
    var(
        "AirVelocity",
        VarType::Float,
        SignalKind::AirVelocity,
        "m/s",
    ),
    var(
        "AirTemperature",
        VarType::Int16,
        SignalKind::AirTemperature,
        "0.1 °C",
    ),
    var("Fan1", VarType::Boolean, SignalKind::FanRunning(1), ""),
    var("Fan2", VarType::Boolean, SignalKind::FanRunning(2), ""),
    var("SumpLevel", VarType::Float, SignalKind::SumpLevel, "%"),
    var("PumpRunning", VarType::Boolean, SignalKind::PumpRunning, ""),
    var("Energy", VarType::UInt32, SignalKind::Energy, "kWh"),
    var("EnergyWh", VarType::UInt64, SignalKind::Energy, "Wh"),
    var("Lighting", VarType::Int64, SignalKind::Lighting, "cd/m²"),
    var("StatusByte", VarType::Byte, SignalKind::StatusWord, ""),
    var("Trend", VarType::SByte, SignalKind::AirVelocity, ""),
];

/// Variables outside the bores: the simulator's mode text and clock.
pub const MODE_ID: &str = "Tunnel.Mode";
pub const CLOCK_ID: &str = "Tunnel.Clock";

/// The node id string of a bore variable.
pub fn node_name(bore: &str, var: &VarSpec) -> String {
    format!("Tunnel.{bore}.{}", var.name)
}

/// The node id string of bulk variable `i` (load tests).
pub fn bulk_name(i: usize) -> String {
    format!("Load.{i}")
}

/// The value of `var` in `model` as its OPC UA type.
pub fn value_of(model: &TunnelModel, var: &VarSpec) -> Variant {
    let signal = Signal {
        name: var.name,
        table: adit_config::Table::HoldingRegister,
        address: 0,
        data_type: adit_config::DataType::F32,
        order: adit_config::WordOrder::Abcd,
        scale: 1.0,
        unit: var.unit,
        kind: var.kind,
    };
    let v = model.value(&signal);
    match var.var_type {
        VarType::Double => Variant::Double(v),
        VarType::Float => Variant::Float(v as f32),
        VarType::Boolean => Variant::Boolean(v != 0.0),
        VarType::Int16 => Variant::Int16((v * 10.0).round() as i16),
        VarType::UInt32 => Variant::UInt32(v as u32),
        VarType::UInt64 => Variant::UInt64((v * 1000.0) as u64),
        VarType::Int64 => Variant::Int64(v.round() as i64),
        VarType::Byte => Variant::Byte(v as u8),
        VarType::SByte => Variant::SByte((v * 10.0).clamp(-128.0, 127.0) as i8),
        VarType::String => Variant::String(format!("{v}").into()),
        VarType::DateTime => Variant::DateTime(Box::new(DateTime::now())),
    }
}

/// The mode text for the current traffic.
pub fn mode_text(model: &TunnelModel) -> &'static str {
    if model.traffic() > 0.7 {
        "heavy traffic"
    } else {
        "normal"
    }
}
