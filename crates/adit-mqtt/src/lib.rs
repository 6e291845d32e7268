//! MQTT for adit: subscriptions to a broker (3.1.1 or 5, TLS on rustls
//! with ring), plain, JSON and Sparkplug B payloads, points named at run
//! time from topic templates or Sparkplug births, and QoS 1 messages
//! acknowledged only once their readings are durable.
//!
//! Modules:
//! - [`payload`]: plain and JSON payloads → items (pure, table and
//!   property tested);
//! - [`doc`]: the JSON tree `payload` reads, borrowed from the payload;
//! - [`flat`]: the common flat JSON object read without serde (the same
//!   tree, property tested against the serde path);
//! - [`sparkplug`]: the Sparkplug B messages and the host state machine
//!   (pure);
//! - [`mapping`]: topic + payload → readings of named points;
//! - [`reject`]: the counted reasons a message is not (all) good;
//! - [`link`]: rumqttc's two clients behind one interface;
//! - [`collector`]: the [`Source`](adit_source::Source) of one connection
//!   (event loop, batching, ordered durable acks, resubscribe, liveness);
//! - [`metrics`]: Prometheus metrics per connection;
//! - [`probe`]: `adit probe mqtt`, what a field engineer runs.

pub mod collector;
pub mod doc;
pub mod flat;
pub mod link;
pub mod mapping;
pub mod metrics;
pub mod payload;
pub mod probe;
pub mod reject;
pub mod sparkplug;

pub use collector::{MqttCollector, MqttConnection};
pub use metrics::{ConnectionMetrics, MqttMetrics};
pub use reject::Reject;
