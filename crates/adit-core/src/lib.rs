//! The reading model every part of adit shares.
//!
//! A [`Reading`] is one sample of one point: a value (or none, when the device
//! could not be read), a [`Quality`] that always says how good it is, the time the
//! device says it was taken and the time adit received it. Readings travel in
//! [`Batch`]es, never one by one.
//!
//! Invariants:
//! - a `Quality` is `Good` only when the value came from the device in this
//!   sample and passed conversion and range checks;
//! - a reading with `value == None` is never `Good`;
//! - [`PointId`]s are dense indexes into the [`PointRegistry`] built from config,
//!   so they can index plain vectors on the hot path.
//!
//! Modules: `point` (ids, registry), `quality` (Good/Uncertain/Bad and
//! reasons, protocol statuses), `reading` (readings, values, batches),
//! `time` (wall-clock timestamps), [`engineering`] (scale and offset of
//! raw numbers, every protocol), [`backoff`] (the one retry backoff),
//! [`url`] (the one endpoint URL parser), [`modbus`] (the register
//! vocabulary of the pure Modbus codec and planner), [`mqtt`] (topic
//! filters, templates with captures, point-id patterns), [`opcua`] (node
//! references with namespaces by index or URI), [`schedule`] (wall-clock
//! aligned grids, so periodic work wakes together), [`durable`] (small
//! files replaced atomically and fsynced).

pub mod backoff;
pub mod durable;
pub mod engineering;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
mod point;
mod quality;
mod reading;
pub mod schedule;
mod time;
pub mod url;

pub use backoff::{jitter, Backoff};
pub use point::{PointId, PointMeta, PointRegistry, PointRegistryError};
pub use quality::{Quality, QualityClass, Reason, StatusName};
pub use reading::{Batch, Reading, Value, KEY_OFFSET_SPAN_US};
pub use time::Timestamp;

/// Lower-case hex of `bytes` (hashes in the audit log and config origin).
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
