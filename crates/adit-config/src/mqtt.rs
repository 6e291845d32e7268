//! The MQTT part of the config: a connection's broker, session, credentials
//! and TLS, its subscriptions (filter, QoS, payload format, how a topic
//! names its points) and the topic of an explicitly listed point.

use std::path::PathBuf;
use std::time::Duration;

use adit_core::mqtt::{PointPattern, TopicTemplate};

use crate::model::Secret;

/// The MQTT protocol level spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

/// One `[[device]]` with `protocol = "mqtt"`: a connection to a broker.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS (rustls, ring), trusting `ca_file` or the Mozilla roots.
    pub tls: bool,
    pub version: MqttVersion,
    /// Unique per broker: two clients with one id knock each other off.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (both or neither).
    pub client_auth: Option<(PathBuf, PathBuf)>,
    pub keep_alive: Duration,
    /// False (default): a persistent session, so QoS 1 messages published
    /// while adit was away are delivered when it returns.
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps the session after a disconnect.
    pub session_expiry: Duration,
    /// Larger messages are refused by the client, counted and acknowledged.
    pub max_payload_size: usize,
    pub subscriptions: Vec<Subscription>,
}

/// `[[device.subscription]]`.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// As sent to the broker (may be `$share/GROUP/FILTER`).
    pub filter: String,
    pub qos: u8,
    pub format: PayloadFormat,
    /// How topics of this subscription name their points at run time
    /// (`None`: only the device's explicit `[[device.point]]` topics).
    pub naming: Option<TopicNaming>,
    /// Nothing within this for a few periods: resubscribe, then reconnect.
    pub expect_every: Option<Duration>,
    /// What points named at run time get.
    pub unit: String,
    pub range: Option<(f64, f64)>,
    pub stale_after: Duration,
    pub deadband: Option<f64>,
}

/// Topic template and point-id pattern of a subscription.
#[derive(Debug, Clone)]
pub struct TopicNaming {
    pub template: TopicTemplate,
    /// Built from the template's captures, plus `{key}` for the member name
    /// of a JSON payload that carries many readings.
    pub point: PointPattern,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayloadFormat {
    /// The whole payload is the value: a number, `true`/`false`, or text.
    Plain,
    Json(JsonFormat),
    /// Sparkplug B (`spBv1.0/…`): births, data, deaths, aliases, rebirths.
    Sparkplug,
}

/// Where a JSON payload keeps its parts (RFC 6901 pointers such as `/value`).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonFormat {
    pub value: String,
    pub timestamp: Option<String>,
    pub timestamp_unit: TimestampUnit,
    pub quality: Option<String>,
    /// Many readings in one message: a pointer to an object (member name =
    /// `{key}`) or an array of objects (their `key` field = `{key}`), each
    /// read with `value`/`timestamp`/`quality` relative to the element.
    pub many: Option<String>,
    /// Within each array element: the field that names it.
    pub key: String,
}

/// How a JSON timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUnit {
    /// RFC 3339 for strings; for numbers, the unit their size implies.
    Auto,
    Rfc3339,
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl TimestampUnit {
    pub const NAMES: [(&'static str, TimestampUnit); 6] = [
        ("auto", TimestampUnit::Auto),
        ("rfc3339", TimestampUnit::Rfc3339),
        ("s", TimestampUnit::Seconds),
        ("ms", TimestampUnit::Millis),
        ("us", TimestampUnit::Micros),
        ("ns", TimestampUnit::Nanos),
    ];
}

/// An explicitly listed point of an MQTT device.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttAddress {
    /// The exact topic (no wildcards).
    pub topic: String,
    /// The subscription whose filter matches `topic` (index into the device's).
    pub subscription: usize,
    /// JSON: this point's value pointer instead of the subscription's.
    pub field: Option<String>,
}
