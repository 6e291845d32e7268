//! Scenario files for `adit sim modbus --scenario FILE`: which units to serve,
//! their faults and any signals frozen at known values.
//!
//! ```toml
//! [[unit]]
//! id = 1                       # a healthy bore
//!
//! [[unit]]
//! id = 2
//! faults = ["delay=3s"]        # see Faults::apply for every fault
//! bulk_registers = 100         # holding 1000.. counting up
//! [unit.set]
//! co_1 = 123.25                # frozen signals, engineering units
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::scenario::tunnel_signals;
use crate::{Faults, UnitSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    unit: Vec<RawUnit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    id: u8,
    #[serde(default)]
    faults: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, f64>,
    #[serde(default)]
    bulk_registers: u16,
}

/// Parses a scenario; errors name the file and what is wrong.
pub fn parse_scenario(text: &str, name: &str) -> Result<Vec<UnitSpec>, String> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    let signals = tunnel_signals();
    let mut units = Vec::with_capacity(raw.unit.len());
    for (i, u) in raw.unit.into_iter().enumerate() {
        let mut faults = Faults::default();
        for spec in &u.faults {
            faults
                .apply(spec)
                .map_err(|e| format!("{name}: unit[{i}].faults: {e}"))?;
        }
        for signal in u.set.keys() {
            if !signals.iter().any(|s| s.name == signal) {
                return Err(format!("{name}: unit[{i}].set: no signal {signal:?}"));
            }
        }
        if units.iter().any(|x: &UnitSpec| x.id == u.id) {
            return Err(format!("{name}: unit[{i}]: unit id {} appears twice", u.id));
        }
        units.push(UnitSpec {
            id: u.id,
            faults,
            frozen: u.set.into_iter().collect(),
            bulk_registers: u.bulk_registers,
        });
    }
    if units.is_empty() {
        return Err(format!("{name}: no [[unit]]"));
    }
    Ok(units)
}

/// Reads and parses a scenario file.
pub fn load_scenario(path: &Path) -> Result<Vec<UnitSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_scenario(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load_scenario(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            parse_scenario("[[unit]]\nid = 1\nfaults = [\"melt\"]", "s.toml")
                .unwrap_err()
                .contains("unit[0].faults: unknown fault")
        );
        assert!(
            parse_scenario("[[unit]]\nid = 1\n[unit.set]\nco_9 = 1.0", "s.toml")
                .unwrap_err()
                .contains("no signal \"co_9\"")
        );
        assert!(parse_scenario("[[unit]]\nid = 1\ncolour = 2", "s.toml")
            .unwrap_err()
            .contains("colour"));
        assert!(
            parse_scenario("[[unit]]\nid = 1\n[[unit]]\nid = 1", "s.toml")
                .unwrap_err()
                .contains("twice")
        );
    }
}
