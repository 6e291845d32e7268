//! One sample of one point, and the batch readings travel in.

use std::sync::Arc;

use crate::{PointId, Quality, Reason, Timestamp};

/// A sampled value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    Bool(bool),
    Text(Arc<str>),
}

impl Value {
    /// The value as a float, for range checks and summaries (text has none).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::Bool(v) => Some(f64::from(u8::from(*v))),
            Value::Text(_) => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::F64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// One normalized sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub point: PointId,
    /// `None` when no value could be obtained (link down, exception); the live
    /// state then keeps showing the last known value with this reading's quality.
    pub value: Option<Value>,
    pub quality: Quality,
    /// The device's own time for the sample, or when the sample was taken.
    pub source_ts: Timestamp,
    /// When adit received the sample.
    pub received_ts: Timestamp,
}

/// A source whose samples carry their own time (MQTT) stores a sample
/// under that time with `received_ts` = the time + an offset below this
/// many µs, so that a redelivered sample finds its row again (see
/// adit-mqtt's `mapping`). Such a `received_ts` is a storage key, not a
/// receive time.
pub const KEY_OFFSET_SPAN_US: i64 = 1_000;

impl Reading {
    /// Whether `received_ts` is a storage key derived from the sample's own
    /// time (see [`KEY_OFFSET_SPAN_US`]) rather than when adit received it.
    /// (A sample taken at its receive time also answers true: the two are
    /// then the same.)
    pub fn received_is_key(&self) -> bool {
        (0..KEY_OFFSET_SPAN_US).contains(&self.received_ts.0.wrapping_sub(self.source_ts.0))
    }

    /// The time a sink stores the reading under: its source time, or its
    /// receive time when the source clock was judged invalid (so rows from
    /// a device stuck in 1970 still land now; the source time is kept
    /// beside it).
    pub fn stored_ts(&self) -> Timestamp {
        if self.quality.reason() == Some(Reason::ClockInvalid) {
            self.received_ts
        } else {
            self.source_ts
        }
    }

    /// A reading without a value, e.g. `Bad(CommFailure)` for a device that is down.
    pub fn without_value(point: PointId, quality: Quality, ts: Timestamp) -> Self {
        Self {
            point,
            value: None,
            quality,
            source_ts: ts,
            received_ts: ts,
        }
    }
}

/// Readings move through the pipeline in batches: one channel send, one lock,
/// one database transaction per batch rather than per reading.
pub type Batch = Vec<Reading>;
