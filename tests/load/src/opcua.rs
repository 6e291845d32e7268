//! The OPC UA load: adit's own OPC UA simulator in a separate process
//! (`adit sim opcua --bulk N`: N doubles that all change every interval),
//! adit subscribed to all N as monitored items of one subscription
//! (publishing = sampling = the interval) over `Basic256Sha256`
//! `SignAndEncrypt` (or `None`), into the discard receiver (the collector's
//! and pipeline's own cost) or SQLite.
//!
//! Figures: notifications/s adit handled against the N / interval offered,
//! CPU-µs per notification (perf's task-clock of adit's process, split into
//! user and system by /proc), context switches/s, RSS and RSS per item.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::discard::DiscardReceiver;
use crate::processes::AditProcess;
use crate::procfs;
use crate::prom::Scrape;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Security {
    /// `Basic256Sha256`, `SignAndEncrypt` (adit's default).
    Encrypt,
    /// `None` (`allow_insecure)`: the collector without crypto.
    None,
}

pub struct OpcuaLoad {
    pub items: usize,
    pub interval: Duration,
    pub security: Security,
    pub sqlite: bool,
    pub warmup: Duration,
    pub measure: Duration,
}

/// The simulator process; killed when dropped.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(
    l: &OpcuaLoad,
    dir: &Path,
    http_port: u16,
    sim_port: u16,
    discard: Option<&str>,
) -> String {
    let security = match l.security {
        Security::Encrypt => "",
        Security::None => "security_mode = \"none\"\nallow_insecure = true\n",
    };
    let interval = format!("{}ms", l.interval.as_millis());
    let mut text = format!(
        "site = \"load-opcua\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [pipeline]\nmax_points = {max}\n\
         [spool]\nfsync = \"interval\"\nmax_size = \"8 GiB\"\n[sink.sqlite]\nenabled = {sqlite}\n{questdb}\
         [[device]]\nid = \"plc\"\nprotocol = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{sim_port}/\"\n\
         pki_dir = \"pki\"\ntimeout = \"5s\"\n{security}\
         [[device.group]]\nname = \"load\"\ninterval = \"{interval}\"\nqueue_size = 10\n",
        data = dir.display(),
        max = l.items + 1000,
        sqlite = l.sqlite,
        questdb = discard.map_or(String::new(), |conf| format!("[sink.questdb]\nconf = \"{conf}\"\n")),
    );
    for i in 0..l.items {
        text.push_str("[[device.point]]\nid = \"load.");
        text.push_str(&i.to_string());
        text.push_str("\"\nnode = \"nsu=urn:adit:sim:tunnel;s=Load.");
        text.push_str(&i.to_string());
        text.push_str("\"\ngroup = \"load\"\n");
    }
    text
}

pub fn run(l: &OpcuaLoad, adit: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Both at once: the simulator binds its port after this returns.
    let [sim_port, http_port] = crate::processes::free_ports()?;
    let sim_pki = dir.path().join("sim-pki");
    let mut sim_cmd = Command::new(adit);
    sim_cmd
        .args(["sim", "opcua", "--listen"])
        .arg(format!("127.0.0.1:{sim_port}"))
        .arg("--pki-dir")
        .arg(&sim_pki)
        .arg("--bulk")
        .arg(l.items.to_string())
        .arg("--interval")
        .arg(format!("{}ms", l.interval.as_millis()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if l.security == Security::None {
        sim_cmd.arg("--insecure");
    }
    let sim = Sim(sim_cmd
        .spawn()
        .map_err(|e| format!("cannot start the simulator: {e}"))?);
    let cert = sim_pki.join("own").join("cert.der");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cert.is_file() || std::net::TcpStream::connect(("127.0.0.1", sim_port)).is_err() {
        if Instant::now() > deadline {
            return Err("the OPC UA simulator did not start within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let trusted = Command::new(adit)
        .args(["opcua", "trust"])
        .arg(&cert)
        .arg("--pki-dir")
        .arg(dir.path().join("pki"))
        .output()
        .map_err(|e| e.to_string())?;
    if !trusted.status.success() {
        return Err(String::from_utf8_lossy(&trusted.stderr).into_owned());
    }
    let discard = if l.sqlite {
        None
    } else {
        Some(DiscardReceiver::start()?)
    };
    let config_path = dir.path().join("load.toml");
    std::fs::write(
        &config_path,
        config(
            l,
            dir.path(),
            http_port,
            sim_port,
            discard.as_ref().map(DiscardReceiver::conf).as_deref(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut adit_process =
        AditProcess::start(adit, &config_path, http_port, dir.path().join("adit.log"))?;
    let pid = adit_process.pid;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Scrape::fetch(http_port)?.sum("adit_opcua_notifications_total", "") < l.items as f64 {
        if Instant::now() > deadline {
            return Err("no notifications within 120 s (see adit.log)".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(l.warmup);

    let before = Scrape::fetch(http_port)?;
    let cpu_before = procfs::cpu_split(pid)?;
    let cs_before = procfs::context_switches(pid).unwrap_or(0);
    let started = Instant::now();
    let perf = procfs::perf_counts(pid, l.measure);
    let seconds = started.elapsed().as_secs_f64();
    let after = Scrape::fetch(http_port)?;
    let cpu_after = procfs::cpu_split(pid)?;
    let cs_after = procfs::context_switches(pid).unwrap_or(0);
    let rss = procfs::status_bytes(pid, "VmRSS")?;
    let delta = |name: &str| after.sum(name, "") - before.sum(name, "");
    let notifications = delta("adit_opcua_notifications_total");
    let publishes = delta("adit_opcua_publishes_total");
    let refreshed = delta("adit_opcua_refreshed_total");
    let rebuilds = delta("adit_opcua_rebuilds_total");
    let dropped = delta("adit_opcua_dropped_total");
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu = perf.as_ref().map_or(user + system, |p| p.cpu_seconds);
    let share_user = if user + system > 0.0 {
        user / (user + system)
    } else {
        0.5
    };
    let per = |x: f64| x * 1e6 / notifications.max(1.0);
    let offered = l.items as f64 / l.interval.as_secs_f64();
    println!(
        "opcua: {} monitored items, publishing {:?}, {:?}, sink {}",
        l.items,
        l.interval,
        l.security,
        if l.sqlite { "sqlite" } else { "discard (ILP)" }
    );
    println!("  offered                  {offered:>12.0} notifications/s");
    println!(
        "  handled                  {:>12.0} notifications/s ({:.0} publish responses/s, {:.0} re-confirmed/s)",
        notifications / seconds,
        publishes / seconds,
        refreshed / seconds
    );
    println!(
        "  CPU-µs per notification  {:>12.2} (user {:.2}, system {:.2}; {})",
        per(cpu),
        per(cpu * share_user),
        per(cpu * (1.0 - share_user)),
        if perf.is_some() {
            "perf task-clock"
        } else {
            "/proc ticks"
        }
    );
    println!(
        "  CPU                      {:>11.1} % of a core",
        cpu / seconds * 100.0
    );
    println!(
        "  context switches/s       {:>12.0}",
        (cs_after.saturating_sub(cs_before)) as f64 / seconds
    );
    println!(
        "  RSS                      {:>9.1} MiB ({:.0} bytes per item, base included)",
        rss as f64 / 1_048_576.0,
        rss as f64 / l.items as f64
    );
    println!("  rebuilds {rebuilds:.0}, dropped {dropped:.0}");
    adit_process.stop()?;
    drop(sim);
    Ok(())
}
