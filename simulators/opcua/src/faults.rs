//! Faults on command (`adit sim opcua --fault SPEC`), parsed purely:
//! - `bad=NODE:STATUS`   serve NODE (e.g. `Tunnel.North.CO`) with a status
//!   by name (e.g. `BadSensorFailure`, `UncertainLastUsableValue`);
//! - `stuck=NODE`        NODE stops changing;
//! - `restart_every=PERIOD[:DOWN]` the server stops every PERIOD and comes
//!   back on the same port after DOWN (default 2s), forgetting sessions and
//!   subscriptions;
//! - `quiet_every=PERIOD[:FOR]` every PERIOD the server keeps its
//!   connections but answers nothing for FOR (default 10s).

use std::str::FromStr;
use std::time::Duration;

use opcua::types::{StatusCode, SubStatusCode};

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Bad { node: String, status: StatusCode },
    Stuck { node: String },
    RestartEvery { every: Duration, down: Duration },
    QuietEvery { every: Duration, quiet: Duration },
}

fn duration(text: &str, spec: &str) -> Result<Duration, String> {
    adit_config::parse_duration(text).map_err(|e| format!("--fault {spec:?}: {e}"))
}

fn period(rest: &str, default: Duration, spec: &str) -> Result<(Duration, Duration), String> {
    let (every, second) = match rest.split_once(':') {
        Some((e, s)) => (duration(e, spec)?, duration(s, spec)?),
        None => (duration(rest, spec)?, default),
    };
    if every <= second {
        return Err(format!(
            "--fault {spec:?}: the period must be longer than the fault"
        ));
    }
    Ok((every, second))
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(spec: &str) -> Result<Fault, String> {
        let (kind, rest) = spec.split_once('=').unwrap_or((spec, ""));
        match kind {
            "bad" => {
                let (node, name) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("--fault {spec:?}: expected bad=NODE:STATUS"))?;
                let sub = SubStatusCode::from_str(name)
                    .map_err(|()| format!("--fault {spec:?}: unknown status {name:?}"))?;
                Ok(Fault::Bad {
                    node: node.to_string(),
                    status: StatusCode::from_category(sub),
                })
            }
            "stuck" if !rest.is_empty() => Ok(Fault::Stuck {
                node: rest.to_string(),
            }),
            "restart_every" => {
                let (every, down) = period(rest, Duration::from_secs(2), spec)?;
                Ok(Fault::RestartEvery { every, down })
            }
            "quiet_every" => {
                let (every, quiet) = period(rest, Duration::from_secs(10), spec)?;
                Ok(Fault::QuietEvery { every, quiet })
            }
            _ => Err(format!(
                "--fault {spec:?}: expected bad=NODE:STATUS, stuck=NODE, restart_every=PERIOD[:DOWN] or quiet_every=PERIOD[:FOR]"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_or_say_why_not() {
        assert_eq!(
            "bad=Tunnel.North.CO:BadSensorFailure".parse::<Fault>(),
            Ok(Fault::Bad {
                node: "Tunnel.North.CO".into(),
                status: StatusCode::BadSensorFailure
            })
        );
        assert_eq!(
            "stuck=Tunnel.South.CO".parse::<Fault>(),
            Ok(Fault::Stuck {
                node: "Tunnel.South.CO".into()
            })
        );
        assert_eq!(
            "restart_every=60s".parse::<Fault>(),
            Ok(Fault::RestartEvery {
                every: Duration::from_secs(60),
                down: Duration::from_secs(2)
            })
        );
        assert_eq!(
            "quiet_every=2m:20s".parse::<Fault>(),
            Ok(Fault::QuietEvery {
                every: Duration::from_secs(120),
                quiet: Duration::from_secs(20)
            })
        );
        for bad in [
            "bad=Tunnel.CO",
            "bad=Tunnel.CO:NoSuchStatus",
            "stuck",
            "restart_every=1s:5s",
            "quiet_every=soon",
            "explode",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
