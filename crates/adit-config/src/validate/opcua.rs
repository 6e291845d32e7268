//! The OPC UA keys of `[[device]]` (`protocol = "opcua"`: `endpoint`,
//! security, identity, PKI, timestamps), its `[[device.group]]` tables and
//! the `node`/`group`/`index` of its points.
//!
//! Secure by default: `security_mode` defaults to `sign_and_encrypt` with
//! `Basic256Sha256`; `none` (or the `None` policy) is refused unless the
//! device says `allow_insecure = true`.

use std::path::Path;
use std::time::Duration;

use adit_core::opcua::{BrowseName, Identifier, Namespace, NodeRef, NodeTarget};

/// `i=85`: the standard Objects folder, where browse paths start.
const OBJECTS_FOLDER: u32 = 85;

use super::{resolve_in, Problems};
use crate::model::{
    DataChangeTrigger, Group, GroupMode, Identity, OpcuaAddress, OpcuaSettings, SecurityMode,
    SecurityPolicy, ServerDeadband, SubscribeSettings, TimestampSource,
};
use crate::raw::{RawDevice, RawGroup, RawPoint};

/// The group of points that name none.
const DEFAULT_GROUP: &str = "default";

fn named<T: Copy>(
    p: &mut Problems,
    path: &str,
    raw: Option<&str>,
    names: &[(&'static str, T)],
    default: T,
) -> T {
    match raw {
        None => default,
        Some(v) => names.iter().find(|(n, _)| *n == v).map_or_else(
            || {
                let all: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
                p.push(path, format!("{v:?}: expected one of {}", all.join(", ")));
                default
            },
            |(_, t)| *t,
        ),
    }
}

pub(super) fn validate_device(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    data_dir: &Path,
) -> OpcuaSettings {
    let endpoint = match p.required(&format!("{path}.endpoint"), rd.endpoint.as_deref()) {
        Some(url) => {
            let ok = url
                .strip_prefix("opc.tcp://")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|hostport| {
                    !hostport.is_empty()
                        && hostport
                            .rsplit_once(':')
                            .is_none_or(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok())
                });
            if !ok {
                p.push(
                    format!("{path}.endpoint"),
                    format!("{url:?}: expected opc.tcp://HOST[:PORT][/PATH]"),
                );
            }
            url.to_string()
        }
        None => String::new(),
    };
    let security_mode = named(
        p,
        &format!("{path}.security_mode"),
        rd.security_mode.as_deref(),
        &SecurityMode::NAMES,
        SecurityMode::SignAndEncrypt,
    );
    let default_policy = if security_mode == SecurityMode::None {
        SecurityPolicy::None
    } else {
        SecurityPolicy::Basic256Sha256
    };
    let security_policy = named(
        p,
        &format!("{path}.security_policy"),
        rd.security_policy.as_deref(),
        &SecurityPolicy::NAMES,
        default_policy,
    );
    match (security_mode, security_policy) {
        (SecurityMode::None, SecurityPolicy::None) => {}
        (SecurityMode::None, _) => p.push(
            format!("{path}.security_policy"),
            "security_mode = \"none\" takes security_policy = \"None\"",
        ),
        (_, SecurityPolicy::None) => p.push(
            format!("{path}.security_policy"),
            "\"None\" cannot sign or encrypt: choose Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss",
        ),
        _ => {}
    }
    let allow_insecure = rd.allow_insecure.unwrap_or(false);
    if security_mode == SecurityMode::None && !allow_insecure {
        p.push(
            format!("{path}.security_mode"),
            "\"none\" sends everything, passwords included, in clear and lets anyone inject values; set allow_insecure = true on this device to accept that",
        );
    }
    let password = super::password(p, path, rd, data_dir);
    let file = |p: &mut Problems, key: &str, raw: Option<&str>| {
        raw.map(|f| {
            let file = resolve_in(data_dir, f);
            if !file.is_file() {
                p.push(
                    format!("{path}.{key}"),
                    format!("{} is not a readable file", file.display()),
                );
            }
            file
        })
    };
    let user_cert = file(p, "user_cert", rd.user_cert.as_deref());
    let user_key = file(p, "user_key", rd.user_key.as_deref());
    let identity = match (rd.username.as_deref(), password, user_cert, user_key) {
        (None, None, None, None) => Identity::Anonymous,
        (Some(user), Some(password), None, None) => Identity::UserName {
            user: user.to_string(),
            password,
        },
        (None, None, Some(cert), Some(key)) => Identity::X509 { cert, key },
        (Some(_), None, _, _) => {
            p.push(
                format!("{path}.password"),
                "a username needs password or password_file",
            );
            Identity::Anonymous
        }
        (None, Some(_), _, _) => {
            p.push(format!("{path}.username"), "a password needs a username");
            Identity::Anonymous
        }
        (None, None, Some(_), None) | (None, None, None, Some(_)) => {
            p.push(
                format!("{path}.user_cert"),
                "user_cert and user_key go together",
            );
            Identity::Anonymous
        }
        _ => {
            p.push(
                format!("{path}.user_cert"),
                "choose one identity: username/password or user_cert/user_key",
            );
            Identity::Anonymous
        }
    };
    let pki_dir = resolve_in(data_dir, rd.pki_dir.as_deref().unwrap_or("pki"));
    let application_uri = rd
        .application_uri
        .clone()
        .unwrap_or_else(|| "urn:adit:collector".to_string());
    let timestamp = named(
        p,
        &format!("{path}.timestamp"),
        rd.timestamp.as_deref(),
        &TimestampSource::NAMES,
        TimestampSource::Source,
    );
    let keep_alive = p.duration(
        &format!("{path}.keep_alive"),
        rd.keep_alive.as_deref(),
        "5s",
        true,
    );
    let mut groups: Vec<Group> = rd
        .group
        .iter()
        .enumerate()
        .map(|(i, g)| validate_group(p, &format!("{path}.group[{i}]"), g))
        .collect();
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].iter().any(|o| o.name == g.name) {
            p.push(
                format!("{path}.group[{i}].name"),
                format!("{:?} is used by another group of this device", g.name),
            );
        }
    }
    let needs_default = rd.point.iter().any(|rp| rp.group.is_none());
    if needs_default && !groups.iter().any(|g| g.name == DEFAULT_GROUP) {
        groups.push(validate_group(p, path, &RawGroup::default()));
    }
    OpcuaSettings {
        endpoint,
        security_mode,
        security_policy,
        allow_insecure,
        identity,
        pki_dir,
        application_uri,
        timestamp,
        keep_alive,
        groups,
    }
}

fn validate_group(p: &mut Problems, path: &str, rg: &RawGroup) -> Group {
    let name = rg.name.clone().unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let interval = p.duration(
        &format!("{path}.interval"),
        rg.interval.as_deref(),
        "1s",
        true,
    );
    let mode = match rg.mode.as_deref() {
        None | Some("subscribe") => {
            let sampling_interval = match rg.sampling_interval.as_deref() {
                Some(raw) => {
                    p.duration(&format!("{path}.sampling_interval"), Some(raw), "1s", false)
                }
                None => interval,
            };
            let queue_size =
                p.int_in(&format!("{path}.queue_size"), rg.queue_size, 10, 1, 10_000) as u32;
            let trigger = named(
                p,
                &format!("{path}.trigger"),
                rg.trigger.as_deref(),
                &DataChangeTrigger::NAMES,
                DataChangeTrigger::StatusValue,
            );
            let deadband = match (rg.server_deadband, rg.server_deadband_type.as_deref()) {
                (None, None) => None,
                (Some(v), kind) if v.is_finite() && v >= 0.0 => match kind {
                    None | Some("absolute") => Some(ServerDeadband::Absolute(v)),
                    Some("percent") if v <= 100.0 => Some(ServerDeadband::Percent(v)),
                    Some("percent") => {
                        p.push(
                            format!("{path}.server_deadband"),
                            format!("{v}: a percent deadband is 0-100"),
                        );
                        None
                    }
                    Some(other) => {
                        p.push(
                            format!("{path}.server_deadband_type"),
                            format!("{other:?}: expected \"absolute\" or \"percent\""),
                        );
                        None
                    }
                },
                (Some(v), _) => {
                    p.push(
                        format!("{path}.server_deadband"),
                        format!("{v} must be a finite number >= 0"),
                    );
                    None
                }
                (None, Some(_)) => {
                    p.push(
                        format!("{path}.server_deadband_type"),
                        "applies only with server_deadband",
                    );
                    None
                }
            };
            if deadband.is_some() && trigger == DataChangeTrigger::Status {
                p.push(
                    format!("{path}.server_deadband"),
                    "a deadband needs trigger \"status_value\" or \"status_value_timestamp\"",
                );
            }
            GroupMode::Subscribe(SubscribeSettings {
                sampling_interval,
                queue_size,
                trigger,
                deadband,
            })
        }
        Some("poll") => {
            for (key, set) in [
                ("sampling_interval", rg.sampling_interval.is_some()),
                ("queue_size", rg.queue_size.is_some()),
                ("trigger", rg.trigger.is_some()),
                ("server_deadband", rg.server_deadband.is_some()),
                ("server_deadband_type", rg.server_deadband_type.is_some()),
            ] {
                if set {
                    p.push(
                        format!("{path}.{key}"),
                        "applies only to mode = \"subscribe\"",
                    );
                }
            }
            GroupMode::Poll
        }
        Some(other) => {
            p.push(
                format!("{path}.mode"),
                format!("{other:?}: expected \"subscribe\" or \"poll\""),
            );
            GroupMode::Poll
        }
    };
    Group {
        name,
        mode,
        interval,
    }
}

pub(super) fn validate_point(
    p: &mut Problems,
    path: &str,
    rp: &RawPoint,
    settings: &OpcuaSettings,
) -> OpcuaAddress {
    let node = |p: &mut Problems, text: &str| {
        NodeRef::parse(text).unwrap_or_else(|e| {
            p.push(format!("{path}.node"), e);
            placeholder()
        })
    };
    let target = match (&rp.browse_path, rp.node.as_deref()) {
        (None, None) => {
            p.push(
                format!("{path}.node"),
                "is required (or browse_path, from node or the Objects folder)",
            );
            NodeTarget::Node(placeholder())
        }
        (None, Some(text)) => {
            if rp.browse_namespace.is_some() {
                p.push(
                    format!("{path}.browse_namespace"),
                    "applies only with browse_path",
                );
            }
            NodeTarget::Node(node(p, text))
        }
        (Some(elements), root) => {
            let root = root.map_or(
                NodeRef {
                    namespace: Namespace::Index(0),
                    identifier: Identifier::Numeric(OBJECTS_FOLDER),
                },
                |text| node(p, text),
            );
            let default = rp
                .browse_namespace
                .clone()
                .map_or(Namespace::Index(0), Namespace::Uri);
            if elements.is_empty() {
                p.push(
                    format!("{path}.browse_path"),
                    "names at least one browse name, e.g. [\"Tunnel\", \"North\", \"CO\"]",
                );
            }
            let path_elements = elements
                .iter()
                .filter_map(|e| {
                    BrowseName::parse(e, &default)
                        .map_err(|why| p.push(format!("{path}.browse_path"), why))
                        .ok()
                })
                .collect();
            NodeTarget::Path {
                root,
                path: path_elements,
            }
        }
    };
    let group_name = rp.group.as_deref().unwrap_or(DEFAULT_GROUP);
    let group = settings
        .groups
        .iter()
        .position(|g| g.name == group_name)
        .unwrap_or_else(|| {
            p.push(
                format!("{path}.group"),
                format!("{group_name:?} is not a [[device.group]] of this device"),
            );
            0
        });
    let index = rp.index.and_then(|i| {
        let ok = u32::try_from(i).ok();
        if ok.is_none() {
            p.push(
                format!("{path}.index"),
                format!("{i}: an array index is 0 or more"),
            );
        }
        ok
    });
    OpcuaAddress {
        target,
        group,
        index,
    }
}

fn placeholder() -> NodeRef {
    NodeRef {
        namespace: Namespace::Index(0),
        identifier: Identifier::Numeric(0),
    }
}

/// A point's expected interval: its group's publishing or poll interval.
pub(super) fn expected_interval(settings: &OpcuaSettings, address: &OpcuaAddress) -> Duration {
    settings
        .groups
        .get(address.group)
        .map_or(Duration::from_secs(1), |g| g.interval)
}
