//! Sparkplug B as a host application sees it: topics, payloads and the
//! per-node state (birth certificates, aliases, sequence numbers, deaths).
//!
//! - [`proto`]: the payload messages (prost, from Tahu's field numbers);
//! - [`host`]: the pure state machine: a message in, samples, deaths and
//!   rebirth requests out.

pub mod host;
pub mod proto;

pub use host::{Host, HostOutput, MessageKind, SparkplugTopic};

use prost::Message as _;

/// The NCMD payload that asks a node to publish its births again.
pub fn rebirth_request(now_ms: u64) -> Vec<u8> {
    let mut metric = proto::Metric::new(
        "Node Control/Rebirth",
        None,
        proto::datatype::BOOLEAN,
        proto::MetricValue::Boolean(true),
    );
    metric.timestamp = Some(now_ms);
    proto::Payload {
        timestamp: Some(now_ms),
        metrics: vec![metric],
        seq: None,
        uuid: None,
        body: None,
    }
    .encode_to_vec()
}
