//! Raw config → validated [`Config`], collecting every error with its key path.
//!
//! The validator never stops at the first problem: each field is checked on its
//! own, and a field that fails gets a placeholder so that checks of the other
//! fields still run. Errors carry key paths (`device[0].point[2].address`); the
//! caller turns paths into lines.
//!
//! By area: this file (the entry point, ids, paths, `pipeline`), [`http`]
//! (the listener, the page and its access control),
//! [`device`] (what every device and point has, whatever its protocol),
//! [`modbus`] (the Modbus keys of a device and its points, shared
//! connections), [`mqtt`] (broker connections, subscriptions, topics of
//! points), [`opcua`] (server connections, security, groups, nodes),
//! [`foreign`] (keys of one protocol on a device of another), [`storage`] (spool, sinks, audit), [`alerting`] (rules,
//! receivers, self-health). A new protocol adds its module beside `modbus`
//! and one arm in `device`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::human::parse_duration;
use crate::model::{Config, ConfigOrigin, PipelineConfig};
use crate::raw::RawConfig;

mod alerting;
mod device;
mod foreign;
mod http;
mod modbus;
mod mqtt;
mod opcua;
mod storage;

/// One problem found by validation: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        path: &str,
        raw: Option<&str>,
        default: &str,
        positive: bool,
    ) -> Duration {
        let text = raw.unwrap_or(default);
        match parse_duration(text) {
            Ok(d) if positive && d.is_zero() => {
                self.push(path, format!("must be greater than zero, got {text:?}"));
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.push(path, e);
                Duration::from_secs(1)
            }
        }
    }

    fn int_in(&mut self, path: &str, raw: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        let v = raw.unwrap_or(default);
        if (min..=max).contains(&v) {
            v
        } else {
            self.push(path, format!("{v} is out of range {min}..={max}"));
            default
        }
    }

    fn required<'a>(&mut self, path: &str, raw: Option<&'a str>) -> Option<&'a str> {
        if raw.is_none() {
            self.push(path, "is required");
        }
        raw
    }
}

/// Validates a raw config; `Err` holds every problem found.
pub fn validate(raw: &RawConfig) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let site = raw.site.clone().unwrap_or_else(|| "adit".to_string());
    let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or("./adit-data"));

    let http = http::validate_http(&mut p, raw.http.as_ref(), &data_dir);

    let rp = raw.pipeline.as_ref();
    let pipeline = PipelineConfig {
        channel_capacity: p.int_in(
            "pipeline.channel_capacity",
            rp.and_then(|r| r.channel_capacity),
            256,
            1,
            1 << 20,
        ) as usize,
        max_future_skew: p.duration(
            "pipeline.max_future_skew",
            rp.and_then(|r| r.max_future_skew.as_deref()),
            "5m",
            false,
        ),
        max_age: p.duration(
            "pipeline.max_age",
            rp.and_then(|r| r.max_age.as_deref()),
            "1d",
            true,
        ),
        max_points: p.int_in(
            "pipeline.max_points",
            rp.and_then(|r| r.max_points),
            65_536,
            1,
            1 << 22,
        ) as usize,
    };

    let sinks = storage::validate_sinks(&mut p, raw.sink.as_ref(), &data_dir);
    let spool = storage::validate_spool(&mut p, raw.spool.as_ref(), &data_dir);
    let audit = storage::validate_audit(&mut p, raw.audit.as_ref(), &data_dir);

    let mut device_ids: HashMap<&str, usize> = HashMap::new();
    let mut point_ids: HashMap<&str, String> = HashMap::new();
    let mut devices = Vec::with_capacity(raw.device.len());
    for (di, rd) in raw.device.iter().enumerate() {
        let path = format!("device[{di}]");
        if let Some(id) = rd.id.as_deref() {
            if let Some(first) = device_ids.insert(id, di) {
                p.push(
                    format!("{path}.id"),
                    format!("duplicate device id {id:?} (first defined at device[{first}])"),
                );
            }
        }
        let device = device::validate_device(&mut p, &path, rd, &data_dir);
        for (pi, rpt) in rd.point.iter().enumerate() {
            if let Some(id) = rpt.id.as_deref() {
                let here = format!("{path}.point[{pi}]");
                if let Some(first) = point_ids.get(id) {
                    p.push(
                        format!("{here}.id"),
                        format!("duplicate point id {id:?} (first defined at {first})"),
                    );
                } else {
                    point_ids.insert(id, here);
                }
            }
        }
        devices.push(device);
    }

    modbus::check_shared_connections(&mut p, &devices);
    let rules = alerting::validate_rules(&mut p, &raw.rule);
    let alerting = alerting::validate_alerting(&mut p, raw.alerting.as_ref(), &data_dir);

    let configured: usize = devices.iter().map(|d| d.points.len()).sum();
    if configured > pipeline.max_points {
        p.push(
            "pipeline.max_points",
            format!(
                "{} is below the {configured} configured points",
                pipeline.max_points
            ),
        );
    }
    if p.0.is_empty() {
        Ok(Config {
            origin: ConfigOrigin::default(),
            site,
            data_dir,
            http,
            pipeline,
            sinks,
            spool,
            audit,
            devices,
            rules,
            alerting,
        })
    } else {
        Err(p.0)
    }
}

/// Expands `${NAME}` from the environment (for secrets such as passwords in
/// connection strings). A missing variable is a config error that names the
/// variable, never its value.
/// `password` (with `${ENV}` expanded) or `password_file` (its first line),
/// never both: the credential of MQTT and OPC UA connections.
fn password(
    p: &mut Problems,
    path: &str,
    rd: &crate::raw::RawDevice,
    data_dir: &Path,
) -> Option<crate::model::Secret> {
    secret(
        p,
        (&format!("{path}.password"), rd.password.as_deref()),
        (
            &format!("{path}.password_file"),
            rd.password_file.as_deref(),
        ),
        data_dir,
    )
}

/// A secret given inline (with `${ENV}` expanded) or as a file (its first
/// line, resolved in `data_dir`), never both. Each side is (key path, value).
fn secret(
    p: &mut Problems,
    (inline_key, inline): (&str, Option<&str>),
    (file_key, file): (&str, Option<&str>),
    data_dir: &Path,
) -> Option<crate::model::Secret> {
    use crate::model::Secret;
    match (inline, file) {
        (Some(_), Some(_)) => {
            p.push(
                file_key,
                format!("give {inline_key} or {file_key}, not both"),
            );
            None
        }
        (Some(raw), None) => Some(Secret::new(expand_env(p, inline_key, raw))),
        (None, Some(file)) => {
            let file = resolve_in(data_dir, file);
            match std::fs::read_to_string(&file) {
                Ok(text) => Some(Secret::new(text.trim_end_matches(['\r', '\n']).to_string())),
                Err(e) => {
                    p.push(file_key, format!("{}: {e}", file.display()));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

fn expand_env(p: &mut Problems, path: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            p.push(path, "unclosed ${ in value");
            return out;
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(value) => out.push_str(&value),
            Err(_) => p.push(path, format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn resolve_in(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

fn validate_id(p: &mut Problems, path: &str, id: Option<&str>) -> String {
    let Some(id) = p.required(path, id) else {
        return String::new();
    };
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/'));
    if !ok {
        p.push(
            path,
            format!("{id:?} must be 1-128 characters of A-Z a-z 0-9 _ . - : /"),
        );
    }
    id.to_string()
}
