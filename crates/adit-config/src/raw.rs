//! The config file as written: plain serde data, deliberately permissive in its
//! types (durations as strings, addresses as wide integers) so that the
//! validator can report every problem at once instead of serde's first one.
//! Unknown keys are collected by `serde_ignored`, not rejected one at a time.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
pub struct RawConfig {
    pub site: Option<String>,
    pub data_dir: Option<String>,
    pub http: Option<RawHttp>,
    pub pipeline: Option<RawPipeline>,
    pub sink: Option<RawSinks>,
    pub spool: Option<RawSpool>,
    pub audit: Option<RawAudit>,
    #[serde(default)]
    pub device: Vec<RawDevice>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    pub alerting: Option<RawAlerting>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawRule {
    pub name: Option<String>,
    pub points: Option<String>,
    pub kind: Option<String>,
    pub raise: Option<f64>,
    pub clear: Option<f64>,
    pub max_per_second: Option<f64>,
    pub samples: Option<i64>,
    pub max_skew: Option<String>,
    #[serde(rename = "for")]
    pub hold: Option<String>,
    pub severity: Option<String>,
    pub check_first: Option<String>,
    pub runbook: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawAlerting {
    pub alertmanager: Option<Vec<String>>,
    pub webhook: Option<Vec<String>>,
    pub mqtt: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub resend_interval: Option<String>,
    pub heartbeat: Option<bool>,
    pub self_health: Option<RawSelfHealth>,
}

/// `[alerting.self_health]`: thresholds of adit's alerts about itself.
#[derive(Debug, Deserialize, Default)]
pub struct RawSelfHealth {
    pub spool_fill: Option<f64>,
    pub sink_failing_for: Option<String>,
    pub restarts: Option<i64>,
    pub restart_window: Option<String>,
    pub dropping_hold: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub page: Option<bool>,
    pub update_interval: Option<String>,
    pub max_clients: Option<i64>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub audit_every: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawPipeline {
    pub channel_capacity: Option<i64>,
    pub max_points: Option<i64>,
    pub max_future_skew: Option<String>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawAudit {
    pub dir: Option<String>,
    pub max_file_size: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawSpool {
    pub dir: Option<String>,
    pub segment_size: Option<String>,
    pub max_size: Option<String>,
    pub when_full: Option<String>,
    pub fsync: Option<String>,
    pub fsync_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawSinks {
    pub sqlite: Option<RawSqliteSink>,
    pub questdb: Option<RawQuestDbSink>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawQuestDbSink {
    pub conf: Option<String>,
    pub table: Option<String>,
    pub batch_max_rows: Option<i64>,
    pub batch_max_delay: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawSqliteSink {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub batch_max_rows: Option<i64>,
    pub batch_max_delay: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawDevice {
    pub id: Option<String>,
    pub protocol: Option<String>,
    pub address: Option<String>,
    pub unit_id: Option<i64>,
    pub poll_interval: Option<String>,
    pub timeout: Option<String>,
    pub order: Option<String>,
    pub max_registers_per_read: Option<i64>,
    pub max_gap: Option<i64>,
    pub reconnect_min: Option<String>,
    pub reconnect_max: Option<String>,
    pub retries: Option<i64>,
    pub breaker_failures: Option<i64>,
    pub inter_frame_delay: Option<String>,
    pub poll_phase: Option<String>,
    pub serial_port: Option<String>,
    pub baud_rate: Option<i64>,
    pub parity: Option<String>,
    pub data_bits: Option<i64>,
    pub stop_bits: Option<i64>,
    pub no_read_ranges: Option<Vec<Vec<i64>>>,
    pub description: Option<String>,
    pub clock: Option<RawDeviceClock>,
    // MQTT connections.
    pub broker: Option<String>,
    pub client_id: Option<String>,
    pub mqtt_version: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub keep_alive: Option<String>,
    pub clean_session: Option<bool>,
    pub session_expiry: Option<String>,
    pub max_payload_size: Option<String>,
    #[serde(default)]
    pub subscription: Vec<RawSubscription>,
    // OPC UA connections (username/password/password_file/keep_alive shared).
    pub endpoint: Option<String>,
    pub security_mode: Option<String>,
    pub security_policy: Option<String>,
    pub allow_insecure: Option<bool>,
    pub pki_dir: Option<String>,
    pub application_uri: Option<String>,
    pub user_cert: Option<String>,
    pub user_key: Option<String>,
    pub timestamp: Option<String>,
    #[serde(default)]
    pub group: Vec<RawGroup>,
    #[serde(default)]
    pub point: Vec<RawPoint>,
}

/// `[[device.group]]` of an OPC UA connection.
#[derive(Debug, Deserialize, Default)]
pub struct RawGroup {
    pub name: Option<String>,
    pub mode: Option<String>,
    pub interval: Option<String>,
    pub sampling_interval: Option<String>,
    pub queue_size: Option<i64>,
    pub trigger: Option<String>,
    pub server_deadband: Option<f64>,
    pub server_deadband_type: Option<String>,
}

/// `[[device.subscription]]` of an MQTT connection.
#[derive(Debug, Deserialize, Default)]
pub struct RawSubscription {
    pub filter: Option<String>,
    pub qos: Option<i64>,
    pub format: Option<String>,
    pub template: Option<String>,
    pub point: Option<String>,
    pub value: Option<String>,
    pub timestamp: Option<String>,
    pub timestamp_unit: Option<String>,
    pub quality: Option<String>,
    pub many: Option<String>,
    pub key: Option<String>,
    pub expect_every: Option<String>,
    pub unit: Option<String>,
    pub range: Option<Vec<f64>>,
    pub stale_after: Option<String>,
    pub deadband: Option<f64>,
}

/// `[device.clock]`: registers holding the device's own clock.
#[derive(Debug, Deserialize, Default)]
pub struct RawDeviceClock {
    pub table: Option<String>,
    pub address: Option<i64>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub order: Option<String>,
    pub unit: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawPoint {
    pub id: Option<String>,
    pub table: Option<String>,
    pub address: Option<i64>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub order: Option<String>,
    pub bit: Option<i64>,
    pub length: Option<i64>,
    pub interval: Option<String>,
    pub deadband: Option<f64>,
    pub deadband_heartbeat: Option<String>,
    pub stale_after: Option<String>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub unit: Option<String>,
    pub range: Option<Vec<f64>>,
    pub description: Option<String>,
    // MQTT points.
    pub topic: Option<String>,
    pub field: Option<String>,
    // OPC UA points.
    pub node: Option<String>,
    pub browse_path: Option<Vec<String>>,
    pub browse_namespace: Option<String>,
    pub group: Option<String>,
    pub index: Option<i64>,
}
