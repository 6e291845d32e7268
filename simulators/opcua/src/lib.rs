//! An OPC UA server for field engineers and tests: the tunnel scenario of
//! the Modbus simulator (two bores: CO, NO2, visibility, air velocity,
//! temperature, fans, sump pump) as variables under one namespace URI,
//! values of every scalar type adit maps, optional bulk variables for load
//! tests, and faults on command.
//!
//! Modules:
//! - [`variables`]: the served variables, their node ids and how they move;
//! - [`server`]: the async-opcua server (endpoints, PKI, limits, users) and
//!   its handle ([`OpcuaSim`]): faults, ground-truth counters, shutdown;
//! - [`faults`]: the faults of `adit sim opcua --fault` (pure parsing);
//! - [`freeze`]: a relay in front of the server that can stop forwarding
//!   while keeping the TCP connection (a server that goes quiet but keeps
//!   the session).

pub mod faults;
pub mod freeze;
pub mod server;
pub mod variables;

pub use faults::Fault;
pub use freeze::FreezeRelay;
pub use server::{OpcuaSim, SimOptions};
pub use variables::{DECOY_NAMESPACE_URI, DECOY_VALUE, NAMESPACE_URI};
