//! Scriptable faults of a simulated unit: everything field devices do wrong
//! that adit must survive (shared/domain-tunnel.md, "How field data goes wrong").

use std::time::Duration;

/// Faults of one unit; the default is a healthy device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// The unit never answers (power off, PLC in STOP, wrong unit id).
    pub no_answer: bool,
    /// Every answer is delayed (slow serial gateway, overloaded PLC).
    pub delay: Option<Duration>,
    /// Every read is refused with this exception code.
    pub exception: Option<u8>,
    /// Reads of more than this many registers are refused with exception 3
    /// (illegal data value), as some old devices do.
    pub max_registers: Option<u16>,
    /// Values freeze where they are (a failed sensor repeating itself).
    pub stuck: bool,
    /// Float signals read NaN.
    pub nan: bool,
    /// Numeric signals read a sentinel far outside their range (broken 4-20 mA
    /// loop): -32768 for i16, 65535 for u16 and u32, -9999 for floats.
    pub out_of_range: bool,
    /// The server drops every open connection this often (a gateway or PLC
    /// resetting its sockets). Connections are per server, so this applies
    /// to every unit of the server; the shortest period given when the
    /// server starts wins.
    pub disconnect_every: Option<Duration>,
    /// The unit's real-time clock lost its time (RTC battery dead): the clock
    /// registers count from 1970 again.
    pub clock_reset: bool,
}

impl Faults {
    /// Parses the `--fault` form `no_answer`, `delay=3s`, `exception=4`,
    /// `max_registers=32`, `stuck`, `nan`, `out_of_range` into `self`.
    pub fn apply(&mut self, spec: &str) -> Result<(), String> {
        let (name, arg) = match spec.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let need = |what: &str| arg.ok_or_else(|| format!("fault {name:?} needs ={what}"));
        match name {
            "no_answer" => self.no_answer = true,
            "delay" => self.delay = Some(adit_config::parse_duration(need("DURATION")?)?),
            "exception" => {
                self.exception = Some(need("CODE")?.parse().map_err(|_| format!("{spec:?}: exception code must be 1-255"))?);
            }
            "max_registers" => {
                self.max_registers = Some(need("N")?.parse().map_err(|_| format!("{spec:?}: N must be 1-125"))?);
            }
            "stuck" => self.stuck = true,
            "nan" => self.nan = true,
            "out_of_range" => self.out_of_range = true,
            "clock_reset" => self.clock_reset = true,
            "disconnect_every" => self.disconnect_every = Some(adit_config::parse_duration(need("DURATION")?)?),
            other => {
                return Err(format!(
                    "unknown fault {other:?}; expected no_answer, delay=DURATION, exception=CODE, max_registers=N, stuck, nan, out_of_range, disconnect_every=DURATION, clock_reset"
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_bad_ones_say_why() {
        let mut f = Faults::default();
        for spec in [
            "no_answer",
            "delay=3s",
            "exception=4",
            "max_registers=32",
            "stuck",
            "nan",
            "out_of_range",
            "disconnect_every=30s",
            "clock_reset",
        ] {
            f.apply(spec).unwrap();
        }
        assert_eq!(
            f,
            Faults {
                no_answer: true,
                delay: Some(Duration::from_secs(3)),
                exception: Some(4),
                max_registers: Some(32),
                stuck: true,
                nan: true,
                out_of_range: true,
                disconnect_every: Some(Duration::from_secs(30)),
                clock_reset: true,
            }
        );
        assert!(Faults::default()
            .apply("delay")
            .unwrap_err()
            .contains("needs"));
        assert!(Faults::default()
            .apply("melt")
            .unwrap_err()
            .contains("unknown fault"));
    }
}
