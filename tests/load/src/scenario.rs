//! A load scenario and the adit config that runs it: `devices` Modbus
//! servers, each polled for `registers` u16 holding registers every
//! `interval`, into the chosen sinks.

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sinks {
    Sqlite,
    Questdb,
    Both,
}

impl Sinks {
    pub fn sqlite(self) -> bool {
        matches!(self, Sinks::Sqlite | Sinks::Both)
    }
    pub fn questdb(self) -> bool {
        matches!(self, Sinks::Questdb | Sinks::Both)
    }
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.sqlite() {
            v.push("sqlite");
        }
        if self.questdb() {
            v.push("questdb");
        }
        v
    }
}

/// What receives the QuestDB sink's ILP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Receiver {
    /// VictoriaMetrics from Debian's packages (ILP v1 over HTTP).
    VictoriaMetrics,
    /// A receiver in this harness that answers 204 and counts lines: adit's
    /// own ceiling, when VictoriaMetrics saturates the machine first.
    Discard,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub devices: usize,
    pub registers: u16,
    pub interval: Duration,
    pub sinks: Sinks,
    pub receiver: Receiver,
    pub fsync: String,
    pub warmup: Duration,
    pub measure: Duration,
}

impl Scenario {
    /// Readings per second the devices offer.
    pub fn offered_rate(&self) -> f64 {
        self.devices as f64 * f64::from(self.registers) / self.interval.as_secs_f64()
    }

    pub fn points(&self) -> usize {
        self.devices * usize::from(self.registers)
    }

    /// The adit config for this scenario.
    pub fn config(
        &self,
        data_dir: &str,
        http_port: u16,
        questdb_conf: Option<&str>,
        addresses: &[String],
    ) -> String {
        let interval = format!("{}ms", self.interval.as_millis().max(1));
        let mut text = format!(
            "site = \"load\"\ndata_dir = \"{data_dir}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[pipeline]\nmax_points = {}\n[spool]\nfsync = \"{}\"\nmax_size = \"8 GiB\"\n[sink.sqlite]\nenabled = {}\n",
            self.points().max(65_536),
            self.fsync,
            self.sinks.sqlite()
        );
        if let Some(conf) = questdb_conf {
            let _ = write!(text, "[sink.questdb]\nconf = \"{conf}\"\n");
        }
        for (d, addr) in addresses.iter().enumerate() {
            let _ = write!(
                text,
                "[[device]]\nid = \"d{d}\"\nprotocol = \"modbus_tcp\"\naddress = \"{addr}\"\npoll_interval = \"{interval}\"\ntimeout = \"2s\"\n"
            );
            for r in 0..self.registers {
                let _ = write!(
                    text,
                    "[[device.point]]\nid = \"d{d}.r{r}\"\ntable = \"holding\"\naddress = {}\n",
                    1000 + u32::from(r)
                );
            }
        }
        text
    }
}
