//! The audit log: append-only JSON lines, each carrying the SHA-256 of the
//! one before it, so that a changed, removed or inserted entry is detected.
//!
//! An entry is one line:
//!
//! ```text
//! {"seq":42,"ts":"2026-11-28T03:12:00.123Z","kind":"device_connect","data":{...},"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` is the SHA-256 of the line's bytes up to (not including) the
//! `,"hash":` that ends it; `prev` is the previous entry's `hash` (64 zeros for
//! the first entry ever). Files are `audit-<n>.jsonl`; when one passes the
//! size limit the next continues the chain (same `prev`/`seq` sequence).
//!
//! Invariants:
//! - entries are written by one thread, in order, each fsynced before the
//!   next; `record` never blocks the caller (a bounded queue; when it is full
//!   the entry is counted as lost, which is itself a self-health alert);
//! - [`Audit::flush`] returns once every entry recorded before it is on disk
//!   (or its time limit passed): adit calls it last at exit, so `adit_stop`
//!   is never lost to a process that ends before its writer thread;
//! - at start, a torn last line (a crash mid-write) is cut off, and the cut is
//!   the first entry written after it;
//! - nothing here ever rewrites or deletes an entry.

mod verify;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use adit_core::Timestamp;
use sha2::{Digest, Sha256};

pub use verify::{verify, VerifyError, VerifyReport};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_MARK: &str = ",\"hash\":\"";

/// Counters of the audit writer.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub written: AtomicU64,
    /// Entries lost because the queue was full or the file unwritable.
    pub lost: AtomicU64,
    /// True while the last write failed (a self-health alert).
    pub failing: AtomicBool,
}

/// Handle to record audit entries; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: Option<SyncSender<Message>>,
    stats: Arc<AuditStats>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

struct Writer {
    dir: PathBuf,
    max_file_bytes: u64,
    file_index: u64,
    file: File,
    file_bytes: u64,
    seq: u64,
    prev: String,
}

fn file_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("audit-{index:06}.jsonl"))
}

/// Audit files in `dir`, in chain order.
pub fn audit_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// The SHA-256 (hex) of an entry's bytes before its hash field.
pub fn entry_hash(prefix: &str) -> String {
    let digest = Sha256::digest(prefix.as_bytes());
    adit_core::to_hex(&digest)
}

/// Splits a line into (prefix that is hashed, stored hash).
pub fn split_line(line: &str) -> Option<(&str, &str)> {
    let at = line.rfind(HASH_MARK)?;
    let hash = line[at + HASH_MARK.len()..].strip_suffix("\"}")?;
    Some((&line[..at], hash))
}

impl Writer {
    fn open(dir: &Path, max_file_bytes: u64) -> Result<(Self, Option<String>), AuditError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let files = audit_files(dir).map_err(err(dir))?;
        let (file_index, mut seq, mut prev, mut repaired) =
            (files.len().max(1) as u64, 0u64, GENESIS.to_string(), None);
        if let Some(last) = files.last() {
            let text = std::fs::read_to_string(last).map_err(err(last))?;
            let whole = text.rfind('\n').map_or(0, |i| i + 1);
            if whole < text.len() {
                // A crash mid-write left a partial line: cut it, and say so.
                let f = OpenOptions::new()
                    .write(true)
                    .open(last)
                    .map_err(err(last))?;
                f.set_len(whole as u64).map_err(err(last))?;
                f.sync_all().map_err(err(last))?;
                repaired = Some(text[whole..].to_string());
            }
            let mut chain_end = None;
            for line in text[..whole].lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    chain_end = Some((
                        v["seq"].as_u64().unwrap_or(0),
                        v["hash"].as_str().unwrap_or(GENESIS).to_string(),
                    ));
                }
            }
            if chain_end.is_none() && files.len() > 1 {
                // The newest file is empty: the chain ends in the one before.
                if let Some(before) = files.get(files.len() - 2) {
                    let text = std::fs::read_to_string(before).map_err(err(before))?;
                    if let Some(v) = text
                        .lines()
                        .rev()
                        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    {
                        chain_end = Some((
                            v["seq"].as_u64().unwrap_or(0),
                            v["hash"].as_str().unwrap_or(GENESIS).to_string(),
                        ));
                    }
                }
            }
            if let Some((s, h)) = chain_end {
                seq = s;
                prev = h;
            }
        }
        let path = file_path(dir, file_index);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        let file_bytes = file.metadata().map_err(err(&path))?.len();
        Ok((
            Self {
                dir: dir.to_path_buf(),
                max_file_bytes,
                file_index,
                file,
                file_bytes,
                seq,
                prev,
            },
            repaired,
        ))
    }

    fn append(&mut self, kind: &str, data: &serde_json::Value) -> std::io::Result<()> {
        if self.file_bytes >= self.max_file_bytes {
            self.file_index += 1;
            let path = file_path(&self.dir, self.file_index);
            self.file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.file_bytes = 0;
            File::open(&self.dir)?.sync_all()?;
        }
        let seq = self.seq + 1;
        let prefix = format!(
            "{{\"seq\":{seq},\"ts\":\"{}\",\"kind\":{},\"data\":{},\"prev\":\"{}\"",
            Timestamp::now().to_rfc3339(),
            serde_json::Value::String(kind.to_string()),
            data,
            self.prev
        );
        let hash = entry_hash(&prefix);
        let line = format!("{prefix}{HASH_MARK}{hash}\"}}\n");
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.file_bytes += line.len() as u64;
        self.seq = seq;
        self.prev = hash;
        Ok(())
    }
}

impl Audit {
    /// Opens the audit log in `dir` and starts its writer thread.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Self, AuditError> {
        let (mut writer, repaired) = Writer::open(dir, max_file_bytes)?;
        let (tx, rx) = sync_channel::<Message>(4096);
        let stats = Arc::new(AuditStats::default());
        if let Some(torn) = repaired {
            let data = serde_json::json!({ "cut_bytes": torn.len(), "reason": "partial last line after a crash" });
            if let Err(e) = writer.append("audit_recovered", &data) {
                tracing::error!(error = %e, "audit log: cannot record its own recovery");
            }
        }
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("adit-audit".into())
            .spawn(move || run_writer(&mut writer, &rx, &thread_stats))
            .map_err(|source| AuditError {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            stats,
        })
    }

    /// An audit handle that records nothing (tools and tests that have no log).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Records an entry; never blocks. `data` must not contain secrets.
    pub fn record(&self, kind: &str, data: serde_json::Value) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(Message::Entry(kind.to_string(), data)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Waits until every entry recorded before this call is written (or
    /// `limit` passed); returns whether it was. Blocking.
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        let Some(tx) = &self.tx else {
            return true;
        };
        let (done_tx, done_rx) = sync_channel(1);
        let deadline = std::time::Instant::now() + limit;
        let mut msg = Message::Flush(done_tx);
        // The queue may be full: retry until there is room or time is up.
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }
}

/// What the writer thread receives.
enum Message {
    Entry(String, serde_json::Value),
    /// Answered once everything before it is written.
    Flush(SyncSender<()>),
}

fn run_writer(writer: &mut Writer, rx: &Receiver<Message>, stats: &AuditStats) {
    while let Ok(msg) = rx.recv() {
        let (kind, data) = match msg {
            Message::Entry(kind, data) => (kind, data),
            Message::Flush(done) => {
                let _ = done.try_send(());
                continue;
            }
        };
        match writer.append(&kind, &data) {
            Ok(()) => {
                stats.written.fetch_add(1, Ordering::Relaxed);
                stats.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                stats.lost.fetch_add(1, Ordering::Relaxed);
                if !stats.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "audit log unwritable; entries are being lost");
                }
            }
        }
    }
}

/// Reads every entry of the log in `dir` (for `adit audit tail`).
pub fn read_entries(dir: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for path in audit_files(dir)? {
        for line in BufReader::new(File::open(path)?).lines() {
            if let Ok(v) = serde_json::from_str(&line?) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// One entry, for people: `2026-11-28T03:12:00.123Z  #42  device_connect  {"device":"plc"}`.
pub fn format_entry(v: &serde_json::Value) -> String {
    format!(
        "{}  #{:<6} {:<22} {}",
        v["ts"].as_str().unwrap_or("?"),
        v["seq"].as_u64().unwrap_or(0),
        v["kind"].as_str().unwrap_or("?"),
        v["data"]
    )
}
