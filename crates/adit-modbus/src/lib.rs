//! Modbus for adit: the pure core (codec, request planner, value conversion
//! (shared with every protocol: `adit_core::engineering`),
//! answer decoding) and the collector that polls a device with tokio-modbus.
//!
//! The pure modules do no I/O and are table- and property-tested; the collector
//! owns timeouts, reconnects and the mapping of link failures and exception
//! responses onto reading quality.

pub mod breaker;
pub mod codec;
pub mod collector;
pub use adit_core::engineering as convert;
pub mod endpoint;
pub mod metrics;
pub mod plan;
pub mod poll;
pub mod probe;
pub mod read;

pub use collector::{ModbusBus, ModbusCollector, ModbusDevice};
pub use metrics::{DeviceMetrics, ModbusMetrics};
