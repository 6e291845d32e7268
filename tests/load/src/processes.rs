//! The processes of a load run: the Modbus simulator and adit itself, each a
//! separate process (so adit's CPU and memory are its own), stopped and
//! reaped when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `$ADIT_BIN`, or `target/<profile>/adit` next to this harness.
pub fn adit_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("ADIT_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .ok_or("no parent directory of the harness")?
        .join("adit");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p adit -p adit-load)",
            bin.display()
        ))
    }
}

/// Sends SIGTERM and waits up to `limit`, then SIGKILL.
fn terminate(child: &mut Child, limit: Duration) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// `adit sim modbus` with `devices` servers, one unit each, `registers`
/// holding registers from 1000.
pub struct SimulatorProcess {
    child: Child,
    pub addresses: Vec<String>,
}

impl SimulatorProcess {
    pub fn start(adit: &Path, devices: usize, registers: u16) -> Result<Self, String> {
        let mut child = Command::new(adit)
            .args([
                "--log-level",
                "warn",
                "sim",
                "modbus",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--units", "1", "--count", &devices.to_string()])
            .args(["--bulk", &registers.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the simulator: {e}"))?;
        let stdout = child.stdout.take().ok_or("simulator has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addresses = Vec::with_capacity(devices);
        while addresses.len() < devices {
            let line = lines
                .next()
                .ok_or("the simulator stopped before listing its addresses")?
                .map_err(|e| e.to_string())?;
            if let Some(addr) = line.split_whitespace().nth(3) {
                addresses.push(addr.to_string());
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, addresses })
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// `adit run` on a generated config, logging JSON to a file.
pub struct AditProcess {
    child: Option<Child>,
    pub pid: u32,
    log: PathBuf,
}

impl AditProcess {
    pub fn start(adit: &Path, config: &Path, http_port: u16, log: PathBuf) -> Result<Self, String> {
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(adit)
            .args(["--log-format", "json", "--log-level", "info", "run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start adit: {e}"))?;
        let pid = child.id();
        let mut process = Self {
            child: Some(child),
            pid,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while crate::prom::http_get(http_port, "/readyz").is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "adit not ready after 120 s; see {}",
                    process.log.display()
                ));
            }
            if let Some(c) = process.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    // The log lives in a temporary directory removed on
                    // return: its end goes into the error.
                    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(format!(
                        "adit exited ({status}); the end of its log:\n{}",
                        tail.join("\n")
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(process)
    }

    /// Stops adit with SIGTERM (it drains into the sinks) and returns its
    /// final accounting line.
    pub fn stop(&mut self) -> Result<serde_json::Value, String> {
        if let Some(mut c) = self.child.take() {
            if !terminate(&mut c, Duration::from_secs(120)) {
                return Err("adit did not stop within 120 s".into());
            }
        }
        let text = std::fs::read_to_string(&self.log).map_err(|e| e.to_string())?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "final accounting")
            .ok_or_else(|| format!("no final accounting in {}", self.log.display()))
    }
}

impl Drop for AditProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(30));
        }
    }
}

/// `N` distinct free loopback ports, all held while they are picked (so no
/// two are the same; another process can still take one before its user
/// binds it, which this harness cannot rule out for a child's ports).
pub fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}
