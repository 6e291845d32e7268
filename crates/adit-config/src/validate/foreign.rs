//! Keys of one protocol on a device of another are mistakes worth naming:
//! each protocol-specific key lists the families it applies to.

use super::Problems;
use crate::model::Protocol;
use crate::raw::RawDevice;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Modbus,
    Mqtt,
    Opcua,
}

impl Family {
    fn of(protocol: Protocol) -> Family {
        match protocol {
            Protocol::Mqtt => Family::Mqtt,
            Protocol::Opcua => Family::Opcua,
            Protocol::ModbusTcp | Protocol::ModbusRtuOverTcp | Protocol::ModbusRtu => {
                Family::Modbus
            }
        }
    }
}

fn owners(families: &[Family]) -> String {
    let names: Vec<&str> = families
        .iter()
        .map(|f| match f {
            Family::Modbus => "Modbus devices",
            Family::Mqtt => "protocol = \"mqtt\"",
            Family::Opcua => "protocol = \"opcua\"",
        })
        .collect();
    names.join(" and ")
}

pub(super) fn check(p: &mut Problems, path: &str, rd: &RawDevice, protocol: Protocol) {
    use Family::{Modbus, Mqtt, Opcua};
    let family = Family::of(protocol);
    let device_keys: [(&str, bool, &[Family]); 36] = [
        ("broker", rd.broker.is_some(), &[Mqtt]),
        ("client_id", rd.client_id.is_some(), &[Mqtt]),
        ("mqtt_version", rd.mqtt_version.is_some(), &[Mqtt]),
        ("username", rd.username.is_some(), &[Mqtt, Opcua]),
        ("password", rd.password.is_some(), &[Mqtt, Opcua]),
        ("password_file", rd.password_file.is_some(), &[Mqtt, Opcua]),
        ("ca_file", rd.ca_file.is_some(), &[Mqtt]),
        ("client_cert", rd.client_cert.is_some(), &[Mqtt]),
        ("client_key", rd.client_key.is_some(), &[Mqtt]),
        ("keep_alive", rd.keep_alive.is_some(), &[Mqtt, Opcua]),
        ("clean_session", rd.clean_session.is_some(), &[Mqtt]),
        ("session_expiry", rd.session_expiry.is_some(), &[Mqtt]),
        ("max_payload_size", rd.max_payload_size.is_some(), &[Mqtt]),
        ("subscription", !rd.subscription.is_empty(), &[Mqtt]),
        ("endpoint", rd.endpoint.is_some(), &[Opcua]),
        ("security_mode", rd.security_mode.is_some(), &[Opcua]),
        ("security_policy", rd.security_policy.is_some(), &[Opcua]),
        ("allow_insecure", rd.allow_insecure.is_some(), &[Opcua]),
        ("pki_dir", rd.pki_dir.is_some(), &[Opcua]),
        ("application_uri", rd.application_uri.is_some(), &[Opcua]),
        ("user_cert", rd.user_cert.is_some(), &[Opcua]),
        ("user_key", rd.user_key.is_some(), &[Opcua]),
        ("timestamp", rd.timestamp.is_some(), &[Opcua]),
        ("group", !rd.group.is_empty(), &[Opcua]),
        ("address", rd.address.is_some(), &[Modbus]),
        ("unit_id", rd.unit_id.is_some(), &[Modbus]),
        ("order", rd.order.is_some(), &[Modbus]),
        (
            "max_registers_per_read",
            rd.max_registers_per_read.is_some(),
            &[Modbus],
        ),
        ("max_gap", rd.max_gap.is_some(), &[Modbus]),
        ("retries", rd.retries.is_some(), &[Modbus]),
        ("breaker_failures", rd.breaker_failures.is_some(), &[Modbus]),
        (
            "inter_frame_delay",
            rd.inter_frame_delay.is_some(),
            &[Modbus],
        ),
        ("poll_phase", rd.poll_phase.is_some(), &[Modbus]),
        ("serial_port", rd.serial_port.is_some(), &[Modbus]),
        ("clock", rd.clock.is_some(), &[Modbus]),
        ("poll_interval", rd.poll_interval.is_some(), &[Modbus]),
    ];
    let serial_keys = [
        ("baud_rate", rd.baud_rate.is_some()),
        ("parity", rd.parity.is_some()),
        ("data_bits", rd.data_bits.is_some()),
        ("stop_bits", rd.stop_bits.is_some()),
        ("no_read_ranges", rd.no_read_ranges.is_some()),
    ];
    let serial = serial_keys.map(|(k, set)| (k, set, &[Modbus] as &[Family]));
    for (key, set, families) in device_keys.iter().chain(serial.iter()) {
        if *set && !families.contains(&family) {
            p.push(
                format!("{path}.{key}"),
                format!("applies only to {}", owners(families)),
            );
        }
    }
    for (i, rp) in rd.point.iter().enumerate() {
        let here = format!("{path}.point[{i}]");
        let point_keys: [(&str, bool, &[Family]); 13] = [
            ("table", rp.table.is_some(), &[Modbus]),
            ("address", rp.address.is_some(), &[Modbus]),
            ("type", rp.data_type.is_some(), &[Modbus]),
            ("order", rp.order.is_some(), &[Modbus]),
            ("bit", rp.bit.is_some(), &[Modbus]),
            ("length", rp.length.is_some(), &[Modbus]),
            ("topic", rp.topic.is_some(), &[Mqtt]),
            ("field", rp.field.is_some(), &[Mqtt]),
            ("node", rp.node.is_some(), &[Opcua]),
            ("browse_path", rp.browse_path.is_some(), &[Opcua]),
            ("browse_namespace", rp.browse_namespace.is_some(), &[Opcua]),
            ("group", rp.group.is_some(), &[Opcua]),
            ("index", rp.index.is_some(), &[Opcua]),
        ];
        for (key, set, families) in point_keys {
            if set && !families.contains(&family) {
                p.push(
                    format!("{here}.{key}"),
                    format!("applies only to {}", owners(families)),
                );
            }
        }
    }
}
