//! `adit probe mqtt`: subscribe once, and show each message as adit would
//! map it (point id, value, time, quality) or why it would be rejected —
//! what a field engineer runs when commissioning a publisher.
//!
//! The probe builds a one-device config from its arguments and runs it
//! through the same validation and [`Mapper`] as the collector (QoS 0, a
//! clean session, a random client id: it never disturbs adit's session).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use adit_core::{PointRegistry, Timestamp};
use adit_source::PointRegistrar;

use crate::link::{self, Incoming};
use crate::mapping::{Effects, Mapper};

/// What to probe.
#[derive(Clone, Debug)]
pub struct ProbeArgs {
    pub broker: String,
    pub topic: String,
    pub format: String,
    /// Topic template naming the points; default: every topic level
    /// captured and joined with `.`.
    pub template: Option<String>,
    pub point: Option<String>,
    pub value: Option<String>,
    pub timestamp: Option<String>,
    pub many: Option<String>,
    pub username: Option<String>,
    /// From the environment variable named here, never the command line.
    pub password_env: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    pub count: usize,
    pub duration: Duration,
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The default template: each `+` level of the filter captured, and a
/// trailing `#` captured as the rest of the topic, so every message gets a
/// point id (`tunnel/#` names `tunnel/north/co` as `north/co`).
fn default_template(filter: &str) -> String {
    let (_, f) = adit_core::mqtt::split_share(filter);
    f.split('/')
        .enumerate()
        .map(|(i, l)| {
            if l == "#" {
                format!("{{l{i}#}}")
            } else if l == "+" {
                format!("{{l{i}}}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn config_text(a: &ProbeArgs) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "[[device]]\nid = \"probe\"\nprotocol = \"mqtt\"\nbroker = {}",
        toml_str(&a.broker)
    );
    let _ = writeln!(
        t,
        "client_id = \"adit-probe-{:08x}\"\nclean_session = true\nreconnect_max = \"2s\"",
        fastrand::u32(..)
    );
    if let Some(u) = &a.username {
        let _ = writeln!(t, "username = {}", toml_str(u));
    }
    if let Some(env) = &a.password_env {
        let _ = writeln!(t, "password = {}", toml_str(&format!("${{{env}}}")));
    }
    for (k, v) in [
        ("ca_file", &a.ca_file),
        ("client_cert", &a.client_cert),
        ("client_key", &a.client_key),
    ] {
        if let Some(v) = v {
            let _ = writeln!(t, "{k} = {}", toml_str(&v.display().to_string()));
        }
    }
    let _ = writeln!(
        t,
        "[[device.subscription]]\nfilter = {}\nqos = 0\nformat = {}",
        toml_str(&a.topic),
        toml_str(&a.format)
    );
    // An exact topic (no wildcard, no template): one point named by it.
    let exact = a.template.is_none() && !a.topic.contains(['+', '#']);
    if a.format != "sparkplug" && !exact {
        let template = a
            .template
            .clone()
            .unwrap_or_else(|| default_template(&a.topic));
        let _ = writeln!(t, "template = {}", toml_str(&template));
        if let Some(p) = &a.point {
            let _ = writeln!(t, "point = {}", toml_str(p));
        }
    }
    for (k, v) in [
        ("value", &a.value),
        ("timestamp", &a.timestamp),
        ("many", &a.many),
    ] {
        if let Some(v) = v {
            let _ = writeln!(t, "{k} = {}", toml_str(v));
        }
    }
    if exact && a.format != "sparkplug" {
        let id: String = a
            .point
            .clone()
            .unwrap_or_else(|| a.topic.chars().map(adit_core::mqtt::sanitize).collect());
        let _ = writeln!(
            t,
            "[[device.point]]\nid = {}\ntopic = {}",
            toml_str(&id),
            toml_str(&a.topic)
        );
    }
    t
}

/// Runs the probe; prints one block per message to stdout via `out`.
pub async fn probe(args: &ProbeArgs, out: &mut dyn FnMut(&str)) -> Result<(), String> {
    let config =
        adit_config::load_str(&config_text(args), "adit probe mqtt").map_err(|e| e.to_string())?;
    let device = config.devices.first().ok_or("no device")?.clone();
    let settings = device.mqtt().cloned().ok_or("no MQTT settings")?;
    let tls = link::tls_config(&settings)?;
    let registry = Arc::new(PointRegistry::with_max_points(100_000));
    let refused =
        prometheus::IntCounter::new("probe_refused", "refused").map_err(|e| e.to_string())?;
    let registrar = PointRegistrar::new(registry.clone(), refused, Arc::new(|_, _| {}));
    // The probe's configured points (an exact topic) are registered like
    // the app registers a config's points.
    let ids: Vec<adit_core::PointId> = device
        .points
        .iter()
        .filter_map(|p| registrar.register(adit_core::PointMeta::plain(&p.id, &device.id, 1000)))
        .collect();
    let mut mapper = Mapper::new(&device, &ids);
    let (client, mut events) = link::connect(&settings, Duration::from_secs(5), tls, None);
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut seen = 0;
    let mut readings = Vec::new();
    let mut fx = Effects::default();
    loop {
        let event = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Incoming::ConnAck { .. }) => {
                out(&format!(
                    "connected to {}; subscribed to {} ({})",
                    args.broker, args.topic, args.format
                ));
                client.try_subscribe(&[(args.topic.clone(), 0)])?;
            }
            Ok(Incoming::SubAck { refused }) if !refused.is_empty() => {
                return Err(format!(
                    "the broker refused the subscription {:?}",
                    args.topic
                ));
            }
            Ok(Incoming::Publish(msg)) => {
                seen += 1;
                let topic = String::from_utf8_lossy(&msg.topic).into_owned();
                readings.clear();
                let now = Timestamp::now();
                if msg.payload.len() > settings.max_payload_size {
                    out(&format!(
                        "{topic}  ({} bytes)\n  rejected: too_large",
                        msg.payload.len()
                    ));
                } else {
                    mapper.map(
                        &topic,
                        &msg.payload,
                        now,
                        msg.retain,
                        &registrar,
                        &mut readings,
                        &mut fx,
                    );
                    let mut block = format!("{topic}  ({} bytes)", msg.payload.len());
                    for r in &readings {
                        let name = registry
                            .get(r.point)
                            .map_or_else(|| "?".to_string(), |m| m.name.to_string());
                        let value = r
                            .value
                            .as_ref()
                            .map_or_else(|| "(no value)".to_string(), ToString::to_string);
                        let reason = r
                            .quality
                            .reason()
                            .map(|q| format!("({})", q.name()))
                            .unwrap_or_default();
                        let _ = write!(
                            block,
                            "\n  {name} = {value}  {}{reason}  at {}",
                            r.quality.class().name(),
                            r.source_ts.to_rfc3339()
                        );
                    }
                    for p in &fx.dead {
                        let name = registry.get(*p).map_or("?", |m| &*m.name);
                        let _ = write!(block, "\n  {name}: node/device died → bad(comm_failure)");
                    }
                    for rej in &fx.rejects {
                        let _ = write!(block, "\n  rejected: {}", rej.name());
                    }
                    if let Some(ncmd) = &fx.rebirth {
                        let _ = write!(block, "\n  (adit would ask for a rebirth on {ncmd})");
                    }
                    out(&block);
                }
                if seen >= args.count {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if e.refused_auth {
                    return Err(format!(
                        "{}: the broker refused the credentials ({})",
                        args.broker, e.message
                    ));
                }
                return Err(format!("{}: {}", args.broker, e.message));
            }
        }
    }
    client.try_disconnect();
    out(&format!("{seen} message(s)"));
    Ok(())
}
