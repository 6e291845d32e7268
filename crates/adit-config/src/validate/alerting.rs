//! `[[rule]]` and `[alerting]`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{resolve_in, validate_id, Problems};
use crate::model::{AlertingConfig, MqttTarget, RuleConfig, RuleKind, SelfHealthConfig};
use crate::raw::{RawAlerting, RawRule, RawSelfHealth};

/// `[[rule]]` tables; names must be unique.
pub(super) fn validate_rules(p: &mut Problems, raw: &[RawRule]) -> Vec<RuleConfig> {
    let rules: Vec<RuleConfig> = raw
        .iter()
        .enumerate()
        .map(|(i, r)| validate_rule(p, &format!("rule[{i}]"), r))
        .collect();
    let mut rule_names: HashMap<&str, usize> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        if let Some(first) = rule_names.insert(r.name.as_str(), i) {
            p.push(
                format!("rule[{i}].name"),
                format!("duplicate rule name {:?} (first at rule[{first}])", r.name),
            );
        }
    }
    rules
}

/// `[alerting]`: receivers and self-health thresholds.
pub(super) fn validate_alerting(
    p: &mut Problems,
    ral: Option<&RawAlerting>,
    data_dir: &Path,
) -> AlertingConfig {
    let urls = |p: &mut Problems, key: &str, list: Option<&Vec<String>>| -> Vec<String> {
        let list = list.cloned().unwrap_or_default();
        for (i, u) in list.iter().enumerate() {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                p.push(
                    format!("alerting.{key}[{i}]"),
                    format!("{u:?} must be an http:// or https:// URL"),
                );
            }
        }
        list
    };
    AlertingConfig {
        alertmanagers: urls(p, "alertmanager", ral.and_then(|a| a.alertmanager.as_ref())),
        webhooks: urls(p, "webhook", ral.and_then(|a| a.webhook.as_ref())),
        mqtt: ral
            .and_then(|a| a.mqtt.as_ref())
            .map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, u)| {
                        MqttTarget::parse(u)
                            .map_err(|e| p.push(format!("alerting.mqtt[{i}]"), e))
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ca_file: ral.and_then(|a| a.ca_file.as_deref()).map(|f| {
            let path = resolve_in(data_dir, f);
            if !path.is_file() {
                p.push(
                    "alerting.ca_file",
                    format!(
                        "{} is not a readable file (PEM certificates of the CAs to trust)",
                        path.display()
                    ),
                );
            }
            path
        }),
        resend_interval: p.duration(
            "alerting.resend_interval",
            ral.and_then(|a| a.resend_interval.as_deref()),
            "30s",
            true,
        ),
        heartbeat: ral.and_then(|a| a.heartbeat).unwrap_or(true),
        self_health: validate_self_health(
            p,
            ral.and_then(|a| a.self_health.as_ref())
                .unwrap_or(&RawSelfHealth::default()),
        ),
    }
}

fn validate_rule(p: &mut Problems, path: &str, r: &crate::raw::RawRule) -> RuleConfig {
    let name = validate_id(p, &format!("{path}.name"), r.name.as_deref());
    let points = p
        .required(&format!("{path}.points"), r.points.as_deref())
        .unwrap_or("*")
        .to_string();
    let need = |p: &mut Problems, key: &str, v: Option<f64>| -> f64 {
        match v {
            Some(x) if x.is_finite() => x,
            Some(x) => {
                p.push(
                    format!("{path}.{key}"),
                    format!("{x} must be a finite number"),
                );
                0.0
            }
            None => {
                p.push(format!("{path}.{key}"), "is required for this kind");
                0.0
            }
        }
    };
    let kind = match p.required(&format!("{path}.kind"), r.kind.as_deref()) {
        Some("above") => {
            let raise = need(p, "raise", r.raise);
            let clear = r.clear.unwrap_or(raise);
            if clear > raise {
                p.push(
                    format!("{path}.clear"),
                    format!("{clear} must not be above raise = {raise}"),
                );
            }
            RuleKind::Above { raise, clear }
        }
        Some("below") => {
            let raise = need(p, "raise", r.raise);
            let clear = r.clear.unwrap_or(raise);
            if clear < raise {
                p.push(
                    format!("{path}.clear"),
                    format!("{clear} must not be below raise = {raise}"),
                );
            }
            RuleKind::Below { raise, clear }
        }
        Some("rate") => RuleKind::Rate {
            max_per_second: need(p, "max_per_second", r.max_per_second).abs(),
        },
        Some("flatline") => RuleKind::Flatline {
            samples: p.int_in(&format!("{path}.samples"), r.samples, 30, 2, 1_000_000) as u32,
        },
        Some("stale") | None => RuleKind::Stale,
        Some("bad_quality") => RuleKind::BadQuality,
        Some("clock") => RuleKind::Clock {
            max_skew: p.duration(
                &format!("{path}.max_skew"),
                r.max_skew.as_deref(),
                "5m",
                true,
            ),
        },
        Some("device_down") => RuleKind::DeviceDown,
        Some(other) => {
            p.push(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected above, below, rate, flatline, stale, bad_quality, clock or device_down"),
            );
            RuleKind::Stale
        }
    };
    let severity = r.severity.clone().unwrap_or_else(|| "warning".into());
    if !matches!(severity.as_str(), "info" | "warning" | "critical") {
        p.push(
            format!("{path}.severity"),
            format!("{severity:?}; expected info, warning or critical"),
        );
    }
    RuleConfig {
        name,
        points,
        kind,
        hold: p.duration(&format!("{path}.for"), r.hold.as_deref(), "0s", false),
        severity,
        check_first: r.check_first.clone().unwrap_or_default(),
        runbook: r.runbook.clone(),
    }
}

fn validate_self_health(p: &mut Problems, r: &RawSelfHealth) -> SelfHealthConfig {
    let path = "alerting.self_health";
    let defaults = SelfHealthConfig::default();
    let spool_fill = r.spool_fill.unwrap_or(defaults.spool_fill);
    if !(spool_fill > 0.0 && spool_fill <= 1.0) {
        p.push(
            format!("{path}.spool_fill"),
            format!("{spool_fill} must be a fraction of the spool bound, above 0 and at most 1 (e.g. 0.8)"),
        );
    }
    // Durations given are checked; absent ones take the model's defaults.
    let dur = |p: &mut Problems, key: &str, raw: Option<&String>, default: Duration| {
        raw.map_or(default, |raw| {
            p.duration(&format!("{path}.{key}"), Some(raw), "1s", true)
        })
    };
    SelfHealthConfig {
        spool_fill,
        sink_failing_for: dur(
            p,
            "sink_failing_for",
            r.sink_failing_for.as_ref(),
            defaults.sink_failing_for,
        ),
        restarts: p.int_in(
            &format!("{path}.restarts"),
            r.restarts,
            i64::try_from(defaults.restarts).unwrap_or(3),
            1,
            1000,
        ) as u64,
        restart_window: dur(
            p,
            "restart_window",
            r.restart_window.as_ref(),
            defaults.restart_window,
        ),
        dropping_hold: dur(
            p,
            "dropping_hold",
            r.dropping_hold.as_ref(),
            defaults.dropping_hold,
        ),
    }
}
