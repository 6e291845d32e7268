//! The MQTT keys of `[[device]]` (`protocol = "mqtt"`: `broker`,
//! `client_id`, credentials, TLS, session), its `[[device.subscription]]`
//! tables and the `topic`/`field` of its explicit points.

use std::path::Path;
use std::time::Duration;

use adit_core::mqtt::{check_filter, filter_matches, PointPattern, TopicTemplate};
use adit_core::url::{Scheme, Url};

use super::{resolve_in, Problems};
use crate::human::parse_size;
use crate::model::{
    JsonFormat, MqttAddress, MqttSettings, MqttVersion, PayloadFormat, Subscription, TimestampUnit,
    TopicNaming,
};
use crate::raw::{RawDevice, RawPoint, RawSubscription};

/// Expected interval of a pushed point when its subscription names none.
pub(super) const DEFAULT_EXPECTED: Duration = Duration::from_secs(10);

/// The MQTT keys of a `[[device]]`.
pub(super) fn validate_device(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    data_dir: &Path,
) -> MqttSettings {
    let (host, port, tls) = match p.required(&format!("{path}.broker"), rd.broker.as_deref()) {
        Some(url) => match Url::parse(url, &[Scheme::Mqtt, Scheme::Mqtts]) {
            Ok(u) => {
                if !u.path.trim_matches('/').is_empty() {
                    p.push(
                        format!("{path}.broker"),
                        format!("{url:?}: a broker URL has no path; topics go in [[device.subscription]]"),
                    );
                }
                (u.host, u.port, u.scheme == Scheme::Mqtts)
            }
            Err(e) => {
                p.push(format!("{path}.broker"), e.clone());
                (String::new(), 1883, false)
            }
        },
        None => (String::new(), 1883, false),
    };
    let version = match rd.mqtt_version.as_deref() {
        None | Some("3.1.1") => MqttVersion::V311,
        Some("5") => MqttVersion::V5,
        Some(other) => {
            p.push(
                format!("{path}.mqtt_version"),
                format!("{other:?}: expected \"3.1.1\" or \"5\""),
            );
            MqttVersion::V311
        }
    };
    let client_id = match rd.client_id.as_deref() {
        Some(id)
            if !id.is_empty() && id.len() <= 23 * 4 && id.chars().all(|c| c.is_ascii_graphic()) =>
        {
            id.to_string()
        }
        Some(id) => {
            p.push(
                format!("{path}.client_id"),
                format!("{id:?} must be 1-92 printable ASCII characters without spaces"),
            );
            String::new()
        }
        None => format!("adit-{}", rd.id.as_deref().unwrap_or("mqtt")),
    };
    let password = super::password(p, path, rd, data_dir);
    if password.is_some() && rd.username.is_none() {
        p.push(format!("{path}.username"), "a password needs a username");
    }
    let file = |p: &mut Problems, key: &str, raw: Option<&str>| {
        raw.map(|f| {
            let path_buf = resolve_in(data_dir, f);
            if !path_buf.is_file() {
                p.push(
                    format!("{path}.{key}"),
                    format!("{} is not a readable file", path_buf.display()),
                );
            }
            path_buf
        })
    };
    let ca_file = file(p, "ca_file", rd.ca_file.as_deref());
    let cert = file(p, "client_cert", rd.client_cert.as_deref());
    let key = file(p, "client_key", rd.client_key.as_deref());
    let client_auth = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            p.push(format!("{path}.client_key"), "client_cert needs client_key");
            None
        }
        (None, Some(_)) => {
            p.push(
                format!("{path}.client_cert"),
                "client_key needs client_cert",
            );
            None
        }
    };
    if !tls && (ca_file.is_some() || client_auth.is_some()) {
        p.push(
            format!("{path}.broker"),
            "ca_file/client_cert apply to TLS: write the broker as mqtts://",
        );
    }
    let keep_alive = p.duration(
        &format!("{path}.keep_alive"),
        rd.keep_alive.as_deref(),
        "30s",
        true,
    );
    if keep_alive < Duration::from_secs(1) || keep_alive > Duration::from_secs(65_535) {
        p.push(
            format!("{path}.keep_alive"),
            "must be between 1s and 65535s",
        );
    }
    let session_expiry = p.duration(
        &format!("{path}.session_expiry"),
        rd.session_expiry.as_deref(),
        "1h",
        false,
    );
    if rd.session_expiry.is_some() && version != MqttVersion::V5 {
        p.push(
            format!("{path}.session_expiry"),
            "applies to mqtt_version = \"5\" (a 3.1.1 broker keeps a persistent session until it is cleaned)",
        );
    }
    let max_payload_size = match rd.max_payload_size.as_deref() {
        None => 256 * 1024,
        Some(raw) => match parse_size(raw) {
            Ok(n) if (64..=256 * 1024 * 1024).contains(&n) => n as usize,
            Ok(n) => {
                p.push(
                    format!("{path}.max_payload_size"),
                    format!("{n} bytes is outside 64 B..256 MiB"),
                );
                256 * 1024
            }
            Err(e) => {
                p.push(format!("{path}.max_payload_size"), e);
                256 * 1024
            }
        },
    };
    if rd.subscription.is_empty() {
        p.push(
            path.to_string(),
            "an MQTT device needs at least one [[device.subscription]]",
        );
    }
    let subscriptions = rd
        .subscription
        .iter()
        .enumerate()
        .map(|(i, rs)| validate_subscription(p, &format!("{path}.subscription[{i}]"), rs))
        .collect();
    MqttSettings {
        host,
        port,
        tls,
        version,
        client_id,
        username: rd.username.clone(),
        password,
        ca_file,
        client_auth,
        keep_alive,
        clean_session: rd.clean_session.unwrap_or(false),
        session_expiry,
        max_payload_size,
        subscriptions,
    }
}

fn pointer(p: &mut Problems, path: &str, raw: Option<&str>) -> Option<String> {
    raw.map(|ptr| {
        if !(ptr.is_empty() || ptr.starts_with('/')) {
            p.push(
                path,
                format!("{ptr:?} is not a JSON pointer: write e.g. \"/value\" (or \"\" for the whole payload)"),
            );
        }
        ptr.to_string()
    })
}

fn validate_subscription(p: &mut Problems, path: &str, rs: &RawSubscription) -> Subscription {
    let filter = p
        .required(&format!("{path}.filter"), rs.filter.as_deref())
        .unwrap_or("#")
        .to_string();
    if let Err(e) = check_filter(&filter) {
        p.push(format!("{path}.filter"), e);
    }
    let qos = p.int_in(&format!("{path}.qos"), rs.qos, 1, 0, 1) as u8;
    let format_name = rs.format.as_deref().unwrap_or("json");
    let json_only = [
        ("value", rs.value.is_some()),
        ("timestamp", rs.timestamp.is_some()),
        ("timestamp_unit", rs.timestamp_unit.is_some()),
        ("quality", rs.quality.is_some()),
        ("many", rs.many.is_some()),
        ("key", rs.key.is_some()),
    ];
    let format = match format_name {
        "plain" => PayloadFormat::Plain,
        "sparkplug" => PayloadFormat::Sparkplug,
        "json" => {
            let timestamp_unit = match rs.timestamp_unit.as_deref() {
                None => TimestampUnit::Auto,
                Some(name) => {
                    if let Some((_, unit)) = TimestampUnit::NAMES.iter().find(|(n, _)| *n == name) {
                        *unit
                    } else {
                        p.push(
                            format!("{path}.timestamp_unit"),
                            format!("{name:?}: expected auto, rfc3339, s, ms, us or ns"),
                        );
                        TimestampUnit::Auto
                    }
                }
            };
            PayloadFormat::Json(JsonFormat {
                value: pointer(p, &format!("{path}.value"), rs.value.as_deref())
                    .unwrap_or_else(|| "/value".into()),
                timestamp: pointer(p, &format!("{path}.timestamp"), rs.timestamp.as_deref()),
                timestamp_unit,
                quality: pointer(p, &format!("{path}.quality"), rs.quality.as_deref()),
                many: pointer(p, &format!("{path}.many"), rs.many.as_deref()),
                key: pointer(p, &format!("{path}.key"), rs.key.as_deref())
                    .unwrap_or_else(|| "/id".into()),
            })
        }
        other => {
            p.push(
                format!("{path}.format"),
                format!("{other:?}: expected \"json\", \"plain\" or \"sparkplug\""),
            );
            PayloadFormat::Plain
        }
    };
    if format_name != "json" {
        for (key, set) in json_only {
            if set {
                p.push(format!("{path}.{key}"), "applies only to format = \"json\"");
            }
        }
    }
    let many = matches!(&format, PayloadFormat::Json(j) if j.many.is_some());
    let naming = match (&format, rs.template.as_deref()) {
        (PayloadFormat::Sparkplug, Some(_)) => {
            p.push(
                format!("{path}.template"),
                "Sparkplug names its points itself: {group}/{node}/{device}/{metric}",
            );
            None
        }
        (PayloadFormat::Sparkplug, None) => None,
        (_, None) => {
            if rs.point.is_some() {
                p.push(format!("{path}.point"), "applies only with `template`");
            }
            None
        }
        (_, Some(text)) => match TopicTemplate::parse(text) {
            Ok(template) => {
                let tf = template.filter();
                let (_, f) = adit_core::mqtt::split_share(&filter);
                if !covers(f, &tf) {
                    p.push(
                        format!("{path}.template"),
                        format!("{text:?} matches topics the filter {filter:?} does not deliver"),
                    );
                }
                let mut names: Vec<&str> = template.names().iter().map(String::as_str).collect();
                if many {
                    if names.contains(&"key") {
                        p.push(
                            format!("{path}.template"),
                            "with `many`, {key} is each member's key: name the topic capture otherwise",
                        );
                    }
                    names.push("key");
                }
                let point = match rs.point.as_deref() {
                    Some(pat) => PointPattern::parse(pat, &names).unwrap_or_else(|e| {
                        p.push(format!("{path}.point"), e);
                        PointPattern::joined(names.len())
                    }),
                    None if names.is_empty() => {
                        p.push(
                            format!("{path}.template"),
                            "has no {capture} to name points with",
                        );
                        PointPattern::joined(0)
                    }
                    None => PointPattern::joined(names.len()),
                };
                Some(TopicNaming { template, point })
            }
            Err(e) => {
                p.push(format!("{path}.template"), e);
                None
            }
        },
    };
    let expect_every = rs
        .expect_every
        .as_deref()
        .map(|raw| p.duration(&format!("{path}.expect_every"), Some(raw), "10s", true));
    let stale_after = match rs.stale_after.as_deref() {
        Some(raw) => p.duration(&format!("{path}.stale_after"), Some(raw), "30s", true),
        None => expect_every.unwrap_or(DEFAULT_EXPECTED) * 3,
    };
    let range = match rs.range.as_deref() {
        None => None,
        Some([lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Some((*lo, *hi)),
        Some(other) => {
            p.push(
                format!("{path}.range"),
                format!("{other:?} must be [min, max] with min < max"),
            );
            None
        }
    };
    let deadband = rs.deadband.filter(|d| {
        let ok = d.is_finite() && *d >= 0.0;
        if !ok {
            p.push(
                format!("{path}.deadband"),
                format!("{d} must be a finite number >= 0"),
            );
        }
        ok
    });
    Subscription {
        filter,
        qos,
        format,
        naming,
        expect_every,
        unit: rs.unit.clone().unwrap_or_default(),
        range,
        stale_after,
        deadband,
    }
}

/// Whether every topic `inner` matches is also matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    let (o, i): (Vec<&str>, Vec<&str>) = (outer.split('/').collect(), inner.split('/').collect());
    for (k, level) in o.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" => {
                if i.get(k).is_none_or(|l| *l == "#") {
                    return false;
                }
            }
            lit => {
                if i.get(k) != Some(&lit) {
                    return false;
                }
            }
        }
    }
    o.len() == i.len()
}

/// The MQTT keys of a `[[device.point]]`: `topic` (exact) and `field`.
pub(super) fn validate_point(
    p: &mut Problems,
    path: &str,
    rp: &RawPoint,
    settings: &MqttSettings,
) -> MqttAddress {
    let topic = p
        .required(&format!("{path}.topic"), rp.topic.as_deref())
        .unwrap_or_default()
        .to_string();
    if topic.contains(['+', '#']) {
        p.push(
            format!("{path}.topic"),
            format!("{topic:?}: a point's topic is exact; wildcards belong in a subscription's template"),
        );
    }
    let subscription = settings
        .subscriptions
        .iter()
        .position(|s| filter_matches(&s.filter, &topic));
    if subscription.is_none() && !topic.is_empty() {
        p.push(
            format!("{path}.topic"),
            format!(
                "{topic:?} is not delivered by any [[device.subscription]] filter of this device"
            ),
        );
    }
    let sub = subscription.and_then(|i| settings.subscriptions.get(i));
    if let Some(s) = sub {
        if s.format == PayloadFormat::Sparkplug {
            p.push(
                format!("{path}.topic"),
                "a Sparkplug subscription names its points from births; list no points for it",
            );
        }
        if rp.field.is_some() && !matches!(s.format, PayloadFormat::Json(_)) {
            p.push(format!("{path}.field"), "applies only to format = \"json\"");
        }
        if matches!(&s.format, PayloadFormat::Json(j) if j.many.is_some()) {
            p.push(
                format!("{path}.topic"),
                "its subscription has `many` (one reading per member, named by the template): a point listed by topic would take every member's value",
            );
        }
    }
    MqttAddress {
        topic,
        subscription: subscription.unwrap_or(0),
        field: pointer(p, &format!("{path}.field"), rp.field.as_deref()),
    }
}

/// The expected interval of a point of `settings` on `topic`.
pub(super) fn expected_interval(settings: &MqttSettings, address: &MqttAddress) -> Duration {
    settings
        .subscriptions
        .get(address.subscription)
        .and_then(|s| s.expect_every)
        .unwrap_or(DEFAULT_EXPECTED)
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_filter_covers_a_template_only_when_it_delivers_all_of_it() {
        for (outer, inner, want) in [
            ("tunnel/#", "tunnel/+/sensors/+", true),
            ("tunnel/+/sensors/+", "tunnel/+/sensors/+", true),
            ("tunnel/north/#", "tunnel/+/x", false),
            ("a/+", "a/#", false),
            ("#", "a/+/b", true),
            ("a/b", "a/b/c", false),
        ] {
            assert_eq!(covers(outer, inner), want, "{outer} ⊇ {inner}");
        }
    }
}
