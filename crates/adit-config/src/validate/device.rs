//! What every device and point has, whatever its protocol: id, protocol,
//! description, poll interval, timeout, reconnect backoff; a point's id,
//! unit, range, scale/offset, interval, staleness and deadband. The
//! protocol's own keys are validated by its module ([`super::modbus`],
//! [`super::mqtt`]).

use std::path::Path;
use std::time::Duration;

use super::{foreign, modbus, mqtt, opcua, validate_id, Problems};
use crate::model::{DeviceConfig, DeviceSettings, PointAddress, PointConfig, Protocol};
use crate::raw::{RawDevice, RawPoint};

pub(super) fn validate_device(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    data_dir: &Path,
) -> DeviceConfig {
    let id = validate_id(p, &format!("{path}.id"), rd.id.as_deref());
    let protocol = match p.required(&format!("{path}.protocol"), rd.protocol.as_deref()) {
        None => Protocol::ModbusTcp,
        Some(name) => Protocol::ALL.into_iter().find(|pr| pr.name() == name).unwrap_or_else(|| {
            p.push(
                format!("{path}.protocol"),
                format!("unknown protocol {name:?}; expected \"modbus_tcp\", \"modbus_rtu_over_tcp\", \"modbus_rtu\", \"mqtt\" or \"opcua\""),
            );
            Protocol::ModbusTcp
        }),
    };
    foreign::check(p, path, rd, protocol);
    if protocol == Protocol::Mqtt {
        return validate_mqtt_device(p, path, rd, id, data_dir);
    }
    if protocol == Protocol::Opcua {
        return validate_opcua_device(p, path, rd, id, data_dir);
    }
    // The protocol's own keys (and its default point order).
    let modbus = modbus::validate_device(p, path, rd, protocol);
    let poll_interval = p.duration(
        &format!("{path}.poll_interval"),
        rd.poll_interval.as_deref(),
        "1s",
        true,
    );
    let (timeout, reconnect_min, reconnect_max) = link_timings(p, path, rd);
    if rd.point.is_empty() {
        p.push(
            path.to_string(),
            "device has no points; add [[device.point]] tables",
        );
    }
    let points: Vec<PointConfig> = rd
        .point
        .iter()
        .enumerate()
        .map(|(i, rp)| {
            let path = format!("{path}.point[{i}]");
            let address = PointAddress::Modbus(modbus::validate_point(p, &path, rp, modbus.order));
            validate_point(p, &path, rp, poll_interval, address)
        })
        .collect();
    modbus::check_points(p, path, &modbus.settings, &points);
    DeviceConfig {
        id,
        protocol,
        description: rd.description.clone().unwrap_or_default(),
        poll_interval,
        timeout,
        reconnect_min,
        reconnect_max,
        points,
        settings: DeviceSettings::Modbus(modbus.settings),
    }
}

/// An MQTT connection: its settings, subscriptions and explicit points
/// (whose expected interval is their subscription's `expect_every`).
fn validate_mqtt_device(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    id: String,
    data_dir: &Path,
) -> DeviceConfig {
    let settings = mqtt::validate_device(p, path, rd, data_dir);
    let points = connection_points(p, path, rd, |p, path, rp| {
        let address = mqtt::validate_point(p, path, rp, &settings);
        let expected = mqtt::expected_interval(&settings, &address);
        (PointAddress::Mqtt(address), expected)
    });
    connection(
        p,
        path,
        rd,
        id,
        Protocol::Mqtt,
        mqtt::DEFAULT_EXPECTED,
        points,
        DeviceSettings::Mqtt(settings),
    )
}

/// An OPC UA connection: its settings, groups and points (whose expected
/// interval is their group's).
fn validate_opcua_device(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    id: String,
    data_dir: &Path,
) -> DeviceConfig {
    let settings = opcua::validate_device(p, path, rd, data_dir);
    if rd.point.is_empty() {
        p.push(
            path.to_string(),
            "device has no points; add [[device.point]] tables with `node`",
        );
    }
    let points = connection_points(p, path, rd, |p, path, rp| {
        let address = opcua::validate_point(p, path, rp, &settings);
        let expected = opcua::expected_interval(&settings, &address);
        (PointAddress::Opcua(address), expected)
    });
    let default_interval = Duration::from_secs(1);
    connection(
        p,
        path,
        rd,
        id,
        Protocol::Opcua,
        default_interval,
        points,
        DeviceSettings::Opcua(settings),
    )
}

/// The points of a pushed connection: `address` validates a point's
/// protocol keys and says how often it is expected.
fn connection_points(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    mut address: impl FnMut(&mut Problems, &str, &RawPoint) -> (PointAddress, Duration),
) -> Vec<PointConfig> {
    rd.point
        .iter()
        .enumerate()
        .map(|(i, rp)| {
            let path = format!("{path}.point[{i}]");
            let (address, expected) = address(p, &path, rp);
            validate_point(p, &path, rp, expected, address)
        })
        .collect()
}

/// A pushed connection (MQTT, OPC UA): what every device has, around its
/// protocol's settings and points.
#[allow(clippy::too_many_arguments)] // one constructor for two protocols
fn connection(
    p: &mut Problems,
    path: &str,
    rd: &RawDevice,
    id: String,
    protocol: Protocol,
    poll_interval: Duration,
    points: Vec<PointConfig>,
    settings: DeviceSettings,
) -> DeviceConfig {
    let (timeout, reconnect_min, reconnect_max) = link_timings(p, path, rd);
    DeviceConfig {
        id,
        protocol,
        description: rd.description.clone().unwrap_or_default(),
        poll_interval,
        timeout,
        reconnect_min,
        reconnect_max,
        points,
        settings,
    }
}

/// `timeout`, `reconnect_min`, `reconnect_max`: every link has them.
fn link_timings(p: &mut Problems, path: &str, rd: &RawDevice) -> (Duration, Duration, Duration) {
    let timeout = p.duration(
        &format!("{path}.timeout"),
        rd.timeout.as_deref(),
        "1s",
        true,
    );
    let reconnect_min = p.duration(
        &format!("{path}.reconnect_min"),
        rd.reconnect_min.as_deref(),
        "250ms",
        true,
    );
    let reconnect_max = p.duration(
        &format!("{path}.reconnect_max"),
        rd.reconnect_max.as_deref(),
        "30s",
        true,
    );
    if reconnect_min > reconnect_max {
        p.push(
            format!("{path}.reconnect_min"),
            "must not be greater than reconnect_max",
        );
    }
    (timeout, reconnect_min, reconnect_max)
}

/// A point's common keys; `address` is what its protocol's module made of
/// the protocol keys.
fn validate_point(
    p: &mut Problems,
    path: &str,
    rp: &RawPoint,
    device_interval: Duration,
    address: PointAddress,
) -> PointConfig {
    let id = validate_id(p, &format!("{path}.id"), rp.id.as_deref());
    let interval = p.duration(
        &format!("{path}.interval"),
        rp.interval.as_deref(),
        "1s",
        true,
    );
    let deadband = rp.deadband.filter(|d| {
        let ok = d.is_finite() && *d >= 0.0;
        if !ok {
            p.push(
                format!("{path}.deadband"),
                format!("{d} must be a finite number >= 0"),
            );
        }
        ok
    });
    let deadband_heartbeat = p.duration(
        &format!("{path}.deadband_heartbeat"),
        rp.deadband_heartbeat.as_deref(),
        "60s",
        true,
    );
    if rp.deadband_heartbeat.is_some() && rp.deadband.is_none() {
        p.push(
            format!("{path}.deadband_heartbeat"),
            "applies only with `deadband`",
        );
    }
    let interval = if rp.interval.is_some() {
        interval
    } else {
        device_interval
    };
    let stale_after = match rp.stale_after.as_deref() {
        Some(raw) => p.duration(&format!("{path}.stale_after"), Some(raw), "3s", true),
        None => interval * 3,
    };
    if stale_after < interval {
        p.push(format!("{path}.stale_after"), format!("{stale_after:?} is shorter than the poll interval {interval:?}: the point would be stale between polls"));
    }
    let scale = rp.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        p.push(
            format!("{path}.scale"),
            format!("{scale} must be a finite, non-zero number"),
        );
    }
    let offset = rp.offset.unwrap_or(0.0);
    if !offset.is_finite() {
        p.push(
            format!("{path}.offset"),
            format!("{offset} must be a finite number"),
        );
    }
    let range = match rp.range.as_deref() {
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
    PointConfig {
        id,
        scale,
        offset,
        unit: rp.unit.clone().unwrap_or_default(),
        range,
        interval,
        deadband,
        deadband_heartbeat,
        stale_after,
        description: rp.description.clone().unwrap_or_default(),
        address,
    }
}
