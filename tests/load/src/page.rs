//! `adit-load page`: what the control-room page's event streams cost adit.
//! The same adit (Modbus simulators in their own process, QuestDB sink into
//! the discard receiver) is measured twice over the same window length:
//! with no page open, then with `clients` event streams connected and read
//! by threads of this process. The difference is the cost of the clients:
//! adit's CPU (its own /proc accounting), RSS and context switches; the
//! clients' side gives bytes and frames per second each, the time to the
//! first snapshot and how many fell behind (`adit_page_clients_lagged_total`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::discard::DiscardReceiver;
use crate::processes::{AditProcess, SimulatorProcess};
use crate::procfs;
use crate::prom::Scrape;
use crate::scenario::{Receiver, Scenario, Sinks};

pub struct PageLoad {
    pub devices: usize,
    pub registers: u16,
    pub interval: Duration,
    pub clients: usize,
    /// Clients that connect and then do not read until the window ended.
    pub stalled: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What every client thread adds to.
#[derive(Default)]
struct ClientTotals {
    bytes: AtomicU64,
    events: AtomicU64,
    snapshots: AtomicU64,
    failed: AtomicU64,
    /// Snapshots the stalled clients got (their first, and one more each
    /// after they fell behind).
    stalled_snapshots: AtomicU64,
    /// Connect → end of the first snapshot, per client.
    first_snapshot: Mutex<Vec<Duration>>,
}

/// One window of adit's own accounting.
struct Window {
    cpu_user: f64,
    cpu_system: f64,
    context_switches: u64,
    seconds: f64,
    rss: u64,
    readings: f64,
}

fn window(pid: u32, port: u16, length: Duration) -> Result<Window, String> {
    let before = Scrape::fetch(port)?;
    let cpu0 = procfs::cpu_split(pid)?;
    let cs0 = procfs::context_switches(pid)?;
    let started = Instant::now();
    std::thread::sleep(length);
    let cpu1 = procfs::cpu_split(pid)?;
    let cs1 = procfs::context_switches(pid)?;
    let after = Scrape::fetch(port)?;
    Ok(Window {
        cpu_user: cpu1.0 - cpu0.0,
        cpu_system: cpu1.1 - cpu0.1,
        context_switches: cs1.saturating_sub(cs0),
        seconds: started.elapsed().as_secs_f64(),
        rss: procfs::status_bytes(pid, "VmRSS")?,
        readings: after.sum("adit_readings_total", "") - before.sum("adit_readings_total", ""),
    })
}

/// Reads one event stream until `stop`, counting what arrives.
fn client(port: u16, totals: &ClientTotals, stop: &AtomicBool) -> Result<(), String> {
    let connected = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    // Every SSE event ends with a blank line (its data holds no newline);
    // the first event of a stream is the snapshot.
    let mut ends = Occurrences::new(b"\n\n");
    let mut snapshots = Occurrences::new(b"event: snapshot");
    let mut first_seen = false;
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut buf) {
            Ok(0) => return Err("stream closed".into()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.to_string()),
        };
        totals.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let events = ends.feed(&buf[..n]);
        totals.events.fetch_add(events, Ordering::Relaxed);
        totals
            .snapshots
            .fetch_add(snapshots.feed(&buf[..n]), Ordering::Relaxed);
        if !first_seen && events > 0 {
            first_seen = true;
            totals
                .first_snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(connected.elapsed());
        }
    }
    Ok(())
}

/// Counts a marker in a byte stream read in pieces.
struct Occurrences {
    needle: &'static [u8],
    /// The last `needle.len() - 1` bytes seen.
    tail: Vec<u8>,
}

impl Occurrences {
    fn new(needle: &'static [u8]) -> Self {
        Self {
            needle,
            tail: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(chunk);
        let mut count = 0;
        let mut i = 0;
        while let Some(at) = find(&joined[i..], self.needle) {
            count += 1;
            i += at + self.needle.len();
        }
        let keep_from = joined.len().saturating_sub(self.needle.len() - 1).max(i);
        self.tail = joined[keep_from..].to_vec();
        count
    }
}

/// Connects, asks for the stream, reads nothing until `resume`, then reads
/// until `stop`, counting snapshots.
fn stalled_client(
    port: u16,
    totals: &ClientTotals,
    resume: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    while !resume.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut snapshots = Occurrences::new(b"event: snapshot");
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return Err("stream closed".into()),
            Ok(n) => {
                totals
                    .stalled_snapshots
                    .fetch_add(snapshots.feed(&buf[..n]), Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn run(l: &PageLoad, adit: &std::path::Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let discard = DiscardReceiver::start()?;
    let s = Scenario {
        devices: l.devices,
        registers: l.registers,
        interval: l.interval,
        sinks: Sinks::Questdb,
        receiver: Receiver::Discard,
        fsync: "interval".into(),
        warmup: l.warmup,
        measure: l.measure,
    };
    let sim = SimulatorProcess::start(adit, s.devices, s.registers)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|x| x.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let mut config = s.config(
        &dir.path().display().to_string(),
        port,
        Some(&discard.conf()),
        &sim.addresses,
    );
    // More streams than the default limit may be asked for.
    config = config.replacen(
        "[http]\n",
        &format!("[http]\nmax_clients = {}\n", (l.clients + l.stalled).max(1)),
        1,
    );
    let config_path = dir.path().join("load.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let mut adit_process =
        AditProcess::start(adit, &config_path, port, dir.path().join("adit.log"))?;
    let pid = adit_process.pid;
    std::thread::sleep(l.warmup);

    let alone = window(pid, port, l.measure)?;

    let totals = Arc::new(ClientTotals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let resume = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<_> = (0..l.clients)
        .map(|_| {
            let (totals, stop) = (totals.clone(), stop.clone());
            std::thread::spawn(move || {
                if client(port, &totals, &stop).is_err() {
                    totals.failed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    threads.extend((0..l.stalled).map(|_| {
        let (totals, stop, resume) = (totals.clone(), stop.clone(), resume.clone());
        std::thread::spawn(move || {
            if stalled_client(port, &totals, &resume, &stop).is_err() {
                totals.failed.fetch_add(1, Ordering::Relaxed);
            }
        })
    }));
    // Every client has its snapshot and the feed runs steadily.
    std::thread::sleep(Duration::from_secs(5));
    let lagged_before = Scrape::fetch(port)?.sum("adit_page_clients_lagged_total", "");
    let (bytes0, events0) = (
        totals.bytes.load(Ordering::Relaxed),
        totals.events.load(Ordering::Relaxed),
    );
    let watched = window(pid, port, l.measure)?;
    let (bytes1, events1) = (
        totals.bytes.load(Ordering::Relaxed),
        totals.events.load(Ordering::Relaxed),
    );
    let scrape = Scrape::fetch(port)?;
    let connected = scrape.sum("adit_page_clients", "");
    let lagged = scrape.sum("adit_page_clients_lagged_total", "") - lagged_before;
    let refused = scrape.sum("adit_page_clients_refused_total", "");
    // The stalled clients read again: they catch up through a snapshot.
    resume.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(10));
    let lagged_after_resume =
        Scrape::fetch(port)?.sum("adit_page_clients_lagged_total", "") - lagged_before;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let accounting = adit_process.stop()?;
    drop(sim);

    let mib = |b: u64| b as f64 / 1_048_576.0;
    let pct = |w: &Window| 100.0 * (w.cpu_user + w.cpu_system) / w.seconds;
    let mut firsts = totals
        .first_snapshot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    firsts.sort();
    let q = |f: f64| {
        firsts
            .get(((firsts.len() as f64 - 1.0) * f).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "page load: {} points ({} devices × {} registers every {:?}, {:.0} readings/s), {} event-stream clients, windows of {:?}",
        s.points(),
        l.devices,
        l.registers,
        l.interval,
        s.offered_rate(),
        l.clients,
        l.measure
    );
    for (name, w) in [("no page open", &alone), ("clients open", &watched)] {
        println!(
            "  {name:<13} adit CPU {:>6.1} % of a core (user {:.2} s + system {:.2} s), {:>6.0} context switches/s, RSS {:>6.1} MiB, {:>7.0} readings/s",
            pct(w),
            w.cpu_user,
            w.cpu_system,
            w.context_switches as f64 / w.seconds,
            mib(w.rss),
            w.readings / w.seconds
        );
    }
    let extra_cpu = pct(&watched) - pct(&alone);
    let extra_rss = watched.rss.saturating_sub(alone.rss);
    println!(
        "  cost of {} clients: {:+.1} % of a core ({:+.3} % each), {:+.1} MiB RSS ({:+.0} KiB each)",
        l.clients,
        extra_cpu,
        extra_cpu / l.clients.max(1) as f64,
        mib(extra_rss),
        extra_rss as f64 / 1024.0 / l.clients.max(1) as f64
    );
    let secs = watched.seconds;
    println!(
        "  per client: {:.1} KiB/s, {:.1} events/s; connected {connected:.0}, failed {}, refused {refused:.0}, lagged (resent a snapshot) {lagged:.0}, snapshots received {}",
        (bytes1 - bytes0) as f64 / 1024.0 / secs / l.clients.max(1) as f64,
        (events1 - events0) as f64 / secs / l.clients.max(1) as f64,
        totals.failed.load(Ordering::Relaxed),
        totals.snapshots.load(Ordering::Relaxed),
    );
    println!(
        "  connect → first snapshot complete: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} clients, all connecting at once)",
        q(0.5),
        q(0.99),
        q(1.0),
        firsts.len()
    );
    if l.stalled > 0 {
        println!(
            "  {} stalled clients (connected, not reading for the whole window): pipeline {:.0} readings/s with them vs {:.0} without; once they read again: lagged {lagged_after_resume:.0} in all, {} snapshots received by them ({} first + the rest after falling behind)",
            l.stalled,
            watched.readings / watched.seconds,
            alone.readings / alone.seconds,
            totals.stalled_snapshots.load(Ordering::Relaxed),
            l.stalled
        );
    }
    let accepted = accounting["accepted"].as_u64().unwrap_or(0);
    let stored = accounting["stored"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "  pipeline: accepted {accepted}, stored {stored}, left in spool {}",
        accounting["left_in_spool_records"]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Occurrences;

    #[test]
    fn markers_split_across_reads_are_counted_once() {
        let text = b"event: snapshot\ndata: {}\n\nevent: delta\ndata: {}\n\n";
        for cut in 0..text.len() {
            let mut ends = Occurrences::new(b"\n\n");
            let mut snaps = Occurrences::new(b"event: snapshot");
            let (a, b) = text.split_at(cut);
            assert_eq!(ends.feed(a) + ends.feed(b), 2, "cut at {cut}");
            assert_eq!(snaps.feed(a) + snaps.feed(b), 1, "cut at {cut}");
        }
    }
}
