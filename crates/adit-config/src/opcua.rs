//! The OPC UA part of the config: a server connection's endpoint, security
//! (secure by default: `None` only with `allow_insecure`), identity and PKI,
//! its groups (a subscription or a polling read each), and a point's node.

use std::path::PathBuf;
use std::time::Duration;

use adit_core::opcua::NodeTarget;

use crate::model::Secret;

/// OPC UA message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    pub const NAMES: [(&'static str, SecurityMode); 3] = [
        ("none", SecurityMode::None),
        ("sign", SecurityMode::Sign),
        ("sign_and_encrypt", SecurityMode::SignAndEncrypt),
    ];
}

/// The security policies adit accepts (the deprecated `Basic128Rsa15` and
/// Basic256 are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityPolicy {
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// Config spelling (the OPC UA policy URI's last part).
    pub const NAMES: [(&'static str, SecurityPolicy); 4] = [
        ("None", SecurityPolicy::None),
        ("Basic256Sha256", SecurityPolicy::Basic256Sha256),
        ("Aes128_Sha256_RsaOaep", SecurityPolicy::Aes128Sha256RsaOaep),
        ("Aes256_Sha256_RsaPss", SecurityPolicy::Aes256Sha256RsaPss),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("None", |(n, _)| n)
    }
}

/// Who adit says it is to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Anonymous,
    UserName {
        user: String,
        password: Secret,
    },
    /// A user certificate (DER) and its private key (PEM).
    X509 {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Which timestamp a reading carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// The source timestamp, else the server's, else receive time.
    Source,
    /// The server timestamp, else receive time.
    Server,
    /// The time adit received the value.
    Receive,
}

impl TimestampSource {
    pub const NAMES: [(&'static str, TimestampSource); 3] = [
        ("source", TimestampSource::Source),
        ("server", TimestampSource::Server),
        ("receive", TimestampSource::Receive),
    ];
}

/// `[[device]]` with `protocol = "opcua"`: one server connection.
#[derive(Debug, Clone)]
pub struct OpcuaSettings {
    /// `opc.tcp://host:port/path`.
    pub endpoint: String,
    pub security_mode: SecurityMode,
    pub security_policy: SecurityPolicy,
    /// Set: `None` security is allowed (logged and audited at every connect).
    pub allow_insecure: bool,
    pub identity: Identity,
    /// `own/`, `private/`, `trusted/`, `rejected/`.
    pub pki_dir: PathBuf,
    /// adit's application URI (in its certificate's SAN).
    pub application_uri: String,
    pub timestamp: TimestampSource,
    /// Session keep-alive (a Read of the server state) and the number of
    /// failed ones after which the session is dropped and rebuilt.
    pub keep_alive: Duration,
    pub groups: Vec<Group>,
}

/// `[[device.group]]`: points read together, by a subscription or a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub mode: GroupMode,
    /// Publishing interval (subscriptions) or poll interval (reads).
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupMode {
    Subscribe(SubscribeSettings),
    /// A Read of every node of the group each interval.
    Poll,
}

/// Monitored-item settings of a subscription group.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeSettings {
    pub sampling_interval: Duration,
    pub queue_size: u32,
    pub trigger: DataChangeTrigger,
    /// Server-side deadband (absolute in engineering units, or percent of
    /// the variable's `EURange`).
    pub deadband: Option<ServerDeadband>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChangeTrigger {
    Status,
    StatusValue,
    StatusValueTimestamp,
}

impl DataChangeTrigger {
    pub const NAMES: [(&'static str, DataChangeTrigger); 3] = [
        ("status", DataChangeTrigger::Status),
        ("status_value", DataChangeTrigger::StatusValue),
        (
            "status_value_timestamp",
            DataChangeTrigger::StatusValueTimestamp,
        ),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServerDeadband {
    Absolute(f64),
    Percent(f64),
}

/// Where an OPC UA point is.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaAddress {
    /// A node, or a browse path from a root node (resolved at connect).
    pub target: NodeTarget,
    /// Index into the device's groups.
    pub group: usize,
    /// An element of an array value (arrays without one are refused).
    pub index: Option<u32>,
}
