//! Test support: the Modbus part of `config/demo.toml` pointed at an
//! in-process simulator, with every file in a test's own directory and the
//! HTTP endpoint on a port the OS picks.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use adit_config::Config;

pub const DEMO: &str = include_str!("../../../config/demo.toml");

pub fn modbus_demo_config(sim: SocketAddr, dir: &Path) -> Config {
    let mut config = adit_config::load_str(DEMO, "config/demo.toml").unwrap();
    // The Modbus part of the demo (MQTT and OPC UA have their own tests).
    config.devices.retain(|d| d.modbus().is_some());
    for d in &mut config.devices {
        if let adit_config::DeviceSettings::Modbus(m) = &mut d.settings {
            m.address = sim.to_string();
        }
    }
    if let Some(sqlite) = config.sinks.sqlite.as_mut() {
        sqlite.path = dir.join("readings.db");
    }
    config.spool.dir = dir.join("spool");
    config.audit.dir = dir.join("audit");
    config.http.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config
}
