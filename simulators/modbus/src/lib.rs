//! A Modbus TCP device simulator serving a road-tunnel scenario.
//!
//! One server answers for several unit ids (one per tunnel bore). Each unit
//! holds the signals of [`scenario::tunnel_signals`]: CO, NO2, visibility, air
//! velocity and temperature, lighting, an energy counter, sump level, jet fan
//! and pump run flags, emergency doors and a status word. Values follow a
//! traffic cycle with noise, fans stage on with CO, the sump fills and is
//! pumped out — plausible enough to watch a dashboard move.
//!
//! For tests and commissioning a signal can be frozen at a known value
//! ([`SimHandle::set`]) and each unit can be given [`Faults`]: no answer,
//! slow answers, exceptions, a read-size limit, stuck values, NaN, sentinel
//! values, dropped connections. Framings: Modbus TCP, RTU over TCP, and RTU
//! on a pseudo terminal (for serial tests). Addresses that no signal uses answer with exception 2
//! (illegal data address), unknown unit ids with exception 11 (gateway target
//! failed to respond).

mod faults;
pub mod scenario;
mod scenario_file;
mod server;

pub use faults::Faults;
pub use scenario::{tunnel_signals, Signal, SignalKind};
pub use scenario_file::{load_scenario, parse_scenario};
pub use server::{
    Framing, SimHandle, Simulator, SimulatorError, UnitSpec, BULK_START, CLOCK_ADDRESS,
    SEQUENCE_ADDRESS,
};
