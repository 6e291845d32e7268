//! The spool's state machine and file handling. See the crate docs for the
//! invariants this file keeps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use adit_core::{PointRegistry, Reading};
use serde::{Deserialize, Serialize};

use crate::codec::{decode_payload, encode_alerts, encode_batch, AlertRecord, Payload};
use crate::faults::{self, Faults, FileOp};
use crate::frame::{parse_record, seal_record, Parsed, HEADER_LEN, MAX_PAYLOAD};
use crate::lock::{lock_dir, DirLock, LockError};
use crate::points::{
    append_runtime, fingerprint, load_table_lines, registry_names, save_table, truncate_table,
    IdMapper,
};
use crate::recent::{Recent, RecentRecord};
use crate::recovery::{items_in, recover_segments, seg_path, RecoveryReport, Segment};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    Interval(Duration),
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    Block,
    DropOldest,
    DropNewest,
}

#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub when_full: WhenFull,
    pub fsync: FsyncPolicy,
    /// Faults to inject into file operations (tests); `None` in production.
    pub faults: Option<Arc<Faults>>,
}

/// The name that quarantine files of records no reader could decode carry
/// where a sink's name would be (`sink-undecoded-<seq>.bin`).
pub const UNDECODED: &str = "undecoded";

#[cfg(test)]
impl SpoolConfig {
    /// A spool in `dir` for unit tests: 1 MiB segments, no size pressure,
    /// no fsync, no faults.
    pub(crate) fn for_test(dir: &std::path::Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Never,
            faults: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process holds the spool directory.
    #[error(transparent)]
    Locked(#[from] LockError),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `when_full = drop_newest` (or a full disk under it) refused the batch.
    #[error("spool full: batch of {0} readings dropped")]
    Dropped(usize),
    /// The batch alone is larger than the spool's size bound; refused.
    #[error("batch of {0} readings larger than the spool's size bound; dropped")]
    TooLarge(usize),
    /// The writer is dead (failed fsync or write); restart to recover.
    #[error("spool writer failed: {0}")]
    Failed(String),
    /// The spool is closed (shutdown).
    #[error("spool closed")]
    Closed,
}

/// Counters since the spool was opened (monotonic).
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub appended_records: AtomicU64,
    pub appended_readings: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub dropped_oldest_readings: AtomicU64,
    pub dropped_newest_readings: AtomicU64,
    pub dropped_unknown_point_readings: AtomicU64,
    /// Readings refused because their batch alone exceeds the size bound.
    pub dropped_too_large_readings: AtomicU64,
    /// Readings of points registered at run time that the point table could
    /// not name (its file unwritable): not spooled.
    pub dropped_unnamed_readings: AtomicU64,
    /// Records that passed their CRC but did not decode (skipped, counted).
    pub undecodable_records: AtomicU64,
    /// Items (readings or alerts) in those records, from their header.
    pub undecodable_readings: AtomicU64,
    /// Of those records, the ones not kept in quarantine (its write failed,
    /// or this run already kept `max_bytes` of them): lost, and counted.
    pub undecodable_not_kept: AtomicU64,
    pub block_waits: AtomicU64,
    /// Records readers took from the handoff (memory) instead of the file.
    pub handed_off_records: AtomicU64,
    pub disk_full_events: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_failures: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct Ledger {
    cursors: BTreeMap<String, u64>,
    next_seq: u64,
}

/// How often, at most, acknowledgements are written to `ledger.json` (see
/// the crate's invariant 2): every acknowledgement updates the cursor in
/// memory; the file follows within this interval, before any segment is
/// deleted, and at close.
pub const LEDGER_INTERVAL: Duration = Duration::from_secs(5);

/// Longest a reader waits without a wake-up before it looks again (a
/// safety net; appends that reach a reader's threshold and `close` wake it).
const READER_MAX_WAIT: Duration = Duration::from_secs(5);

/// Bytes a reader takes from a segment file per read (records are parsed
/// from this buffer: one system call for many records).
const READ_CHUNK: usize = 256 * 1024;

struct State {
    segments: VecDeque<Segment>,
    active: Option<File>,
    next_seq: u64,
    cursors: BTreeMap<String, u64>,
    total_bytes: u64,
    /// Appended records not yet covered by an fsync.
    dirty: bool,
    /// Cursors moved since `ledger.json` was last written, and when it was.
    ledger_dirty: bool,
    ledger_written: Instant,
    /// Items (readings or alerts, at least one per record) appended since
    /// open; readers wait for it to reach a threshold.
    items_total: u64,
    /// The lowest `items_total` a waiting reader wants to be woken at
    /// (`u64::MAX`: none waits). Appends below it wake nobody.
    reader_wake_at: u64,
    failed: Option<String>,
    closed: bool,
    /// The record being appended: header room, then its payload.
    buf: Vec<u8>,
    /// The last records appended, handed to readers that keep up (see
    /// [`crate::recent`]).
    recent: Recent,
}

struct Shared {
    cfg: SpoolConfig,
    /// Lines in this run's point table (`points-<fingerprint>.txt`): ids
    /// below it can be named after a restart; the live registry (attached
    /// by the pipeline) names the ones above, which are appended first.
    table: Mutex<PointTable>,
    /// Highest sequence number as durable as the fsync policy promises
    /// (see [`Spool::durable_seq`]), and its waiters.
    durable: AtomicU64,
    durable_lock: Mutex<()>,
    durable_changed: Condvar,
    /// Held while any clone of the spool lives: one process per directory.
    _lock: DirLock,
    fingerprint: u64,
    state: Mutex<State>,
    appended: Condvar,
    space: Condvar,
    stats: SpoolStats,
    /// Wakes the background flusher (fsync under `interval`, the ledger).
    flusher: Arc<FlushSignal>,
    /// `next_seq - 1` and the slowest cursor (`u64::MAX` without cursors),
    /// published under the state lock after every change, so that
    /// [`Spool::last_seq`] and [`Spool::pending_records`] never wait for
    /// the lock (it is held across fsyncs: `always`, rotation, the ledger),
    /// and a metrics tick on the async runtime never waits for a disk.
    last_seq: AtomicU64,
    min_acked: AtomicU64,
    /// Bytes of undecodable records this run kept in quarantine; held
    /// while one is written, so readers of several sinks finding the same
    /// record never write one file at once (they share its temporary name).
    undecoded_kept: Mutex<u64>,
}

/// Publishes the positions [`Shared::last_seq`] and [`Shared::min_acked`]
/// follow (call with the state lock held, after a change).
fn publish_positions(shared: &Shared, st: &State) {
    shared.last_seq.store(st.next_seq - 1, Ordering::Release);
    let min = st.cursors.values().copied().min().unwrap_or(u64::MAX);
    shared.min_acked.store(min, Ordering::Release);
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.flusher.stop();
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if st.ledger_dirty {
            if let Err(e) = write_ledger(&self.cfg, st) {
                tracing::error!(error = %e, "cannot write the spool ledger at close; the last acknowledged records will be delivered again");
            }
        }
    }
}

/// The flusher's doorbell: rung when something becomes due (unsynced
/// records, an unwritten ledger); the flusher sleeps on it, so a spool with
/// nothing to do costs no wake-ups. Held apart from [`Shared`] so the
/// sleeping flusher does not keep the spool (and its directory lock) alive.
#[derive(Default)]
struct FlushSignal {
    flags: Mutex<FlushFlags>,
    rung: Condvar,
}

#[derive(Default)]
struct FlushFlags {
    /// Rung and not yet seen by the flusher.
    rung: bool,
    /// The spool is gone: the flusher ends.
    stopped: bool,
}

impl FlushSignal {
    /// Something is due: wake the flusher unless it already knows.
    fn ring(&self) {
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        if !flags.rung {
            flags.rung = true;
            self.rung.notify_one();
        }
    }

    fn stop(&self) {
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        flags.stopped = true;
        self.rung.notify_one();
    }

    /// Waits until rung (clearing the ring), stopped, or `limit` passed.
    fn wait(&self, limit: Option<Duration>) -> Wake {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if flags.stopped {
                return Wake::Stopped;
            }
            if std::mem::take(&mut flags.rung) {
                return Wake::Rung;
            }
            flags = match deadline {
                None => self
                    .rung
                    .wait(flags)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Wake::TimedOut;
                    }
                    self.rung
                        .wait_timeout(flags, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

enum Wake {
    Rung,
    TimedOut,
    Stopped,
}

/// The spool. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// This run's point table and the registry whose run-time points extend it.
///
/// Invariant: line `i` of the table names point id `i`, for every id a
/// record in this spool uses. Lines are appended (fsynced) before the first
/// record that uses them; a failed append is cut back; at open the table is
/// checked line by line and cut at the first line that does not re-register
/// at its own id; a reading whose point could not be named is not appended
/// (counted, `unnamed_point`), so no record ever refers to an id the table
/// does not name.
#[derive(Debug, Default)]
struct PointTable {
    lines: usize,
    /// Byte length of the table file after its last whole line.
    bytes: u64,
    registry: Option<Arc<PointRegistry>>,
    /// The table could not be extended (logged once).
    failing: bool,
}

impl Spool {
    /// Opens (creating if needed) the spool, recovers it, and registers the
    /// given cursors (one per sink). Cursors not in the ledger start at the
    /// oldest retained record; ledger cursors not given are forgotten.
    pub fn open(
        cfg: SpoolConfig,
        registry: &PointRegistry,
        cursors: &[&str],
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        let dir = cfg.dir.clone();
        if cursors.is_empty() {
            // With no cursor every record would count as delivered and go.
            return Err(SpoolError::Io {
                path: dir,
                source: std::io::Error::other("a spool needs at least one cursor (sink)"),
            });
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock = lock_dir(&dir)?;
        let names = registry_names(registry);
        let fp = fingerprint(&names);
        if let Err(e) = save_table(&dir, fp, &names) {
            // Only needed to map ids after a config change; never a reason not to start.
            tracing::error!(dir = %dir.display(), error = %e, "cannot save the spool's point table");
        }
        // Points registered at run time by an earlier run of this config come
        // back with the ids they had (the table's lines are their ids).
        let (mut table_lines, mut table_bytes) = (names.len(), 0u64);
        if let Some(lines) = load_table_lines(&dir, fp) {
            let mut cut = None;
            for (i, (entry, end)) in lines.iter().enumerate() {
                if i < names.len() {
                    table_bytes = *end;
                    continue;
                }
                let name = entry.name.clone();
                let back = entry
                    .runtime
                    .clone()
                    .map(|meta| registry.get_or_register(meta));
                match back {
                    Some(Ok((id, true))) if id.index() == i => {
                        table_lines = i + 1;
                        table_bytes = *end;
                    }
                    other => {
                        tracing::error!(point = %name, line = i, outcome = ?other.map(|r| r.map(|(id, _)| id)), "spool: the point table stops being consistent here; cut (no record uses a later line)");
                        cut = Some(table_bytes);
                        break;
                    }
                }
            }
            let whole = lines.last().map_or(0, |(_, end)| *end);
            if cut.is_none() && lines.len() >= names.len() {
                table_bytes = whole;
            }
            let file_len =
                std::fs::metadata(dir.join(format!("points-{fp:016x}.txt"))).map_or(0, |m| m.len());
            if cut.is_some() || file_len > table_bytes {
                if let Err(e) = truncate_table(&dir, fp, table_bytes) {
                    tracing::error!(error = %e, "spool: cannot cut the point table; new points are not named this run");
                }
            }
        }

        let mut report = RecoveryReport::default();
        let (mut segments, min_next_seq) =
            recover_segments(&dir, cfg.faults.as_ref(), &mut report)?;
        let ledger_path = dir.join("ledger.json");
        let ledger: Ledger = if let Ok(bytes) = std::fs::read(&ledger_path) {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(path = %ledger_path.display(), error = %e, "spool ledger unreadable: every retained record will be replayed");
            report.ledger_missing = true;
            Ledger::default()
        })
        } else {
            report.ledger_missing = !segments.is_empty();
            Ledger::default()
        };
        let oldest = segments
            .front()
            .map_or(0, |s| s.first_seq.saturating_sub(1));
        let mut state_cursors = BTreeMap::new();
        for &c in cursors {
            let acked = ledger.cursors.get(c).copied().unwrap_or(oldest);
            state_cursors.insert(c.to_string(), acked);
        }
        for forgotten in ledger
            .cursors
            .keys()
            .filter(|k| !cursors.contains(&k.as_str()))
        {
            tracing::warn!(cursor = %forgotten, "spool cursor no longer configured; forgetting it");
        }
        let last_seq = segments.iter().map(|s| s.last_seq).max().unwrap_or(0);
        if !report.ledger_missing {
            // Records after the acknowledged position and before the first
            // survivor are gone (a deleted or lost first segment).
            let min_acked = ledger.cursors.values().copied().min().unwrap_or(0);
            let first = segments
                .iter()
                .find(|s| s.last_seq >= s.first_seq)
                .map(|s| s.first_seq);
            if let Some(first) = first.filter(|&f| f > min_acked + 1 && !ledger.cursors.is_empty())
            {
                let lost = first - min_acked - 1;
                report.lost_records += lost;
                report.missing_segments += 1;
                tracing::error!(from = min_acked + 1, to = first - 1, records = lost, "spool: records after the acknowledged position are missing (a deleted segment, or acknowledged while the ledger could not be written)");
            }
        }
        let next_seq = ledger
            .next_seq
            .max(last_seq + 1)
            .max(min_next_seq)
            .max(state_cursors.values().copied().max().unwrap_or(0) + 1)
            .max(1);
        let min_acked = state_cursors.values().copied().min().unwrap_or(last_seq);
        report.pending_records = segments
            .iter()
            .map(|s| {
                s.last_seq
                    .saturating_sub(min_acked.max(s.first_seq.saturating_sub(1)))
            })
            .sum();

        // Delete what every cursor has acknowledged (best effort: a file
        // that cannot be deleted now is deleted with its successors later).
        while segments.len() > 1 && segments.front().is_some_and(|s| s.last_seq <= min_acked) {
            if let Some(s) = segments.pop_front() {
                if let Err(e) = std::fs::remove_file(&s.path) {
                    tracing::warn!(segment = %s.path.display(), error = %e, "cannot delete acknowledged segment");
                }
            }
        }
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        // Append to the last segment unless it is sealed or will not open:
        // then the first append starts a new one.
        let active = segments.back().filter(|s| !s.sealed).and_then(|s| {
            OpenOptions::new()
                .append(true)
                .open(&s.path)
                .map_err(|e| tracing::error!(segment = %s.path.display(), error = %e, "cannot reopen the last segment; starting a new one"))
                .ok()
        });
        let stats = SpoolStats::default();
        stats.bytes.store(total_bytes, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            table: Mutex::new(PointTable {
                lines: table_lines,
                bytes: table_bytes,
                ..PointTable::default()
            }),
            cfg,
            // What recovery found is on disk (or as durable as it will get).
            durable: AtomicU64::new(next_seq - 1),
            last_seq: AtomicU64::new(next_seq - 1),
            min_acked: AtomicU64::new(u64::MAX),
            durable_lock: Mutex::new(()),
            durable_changed: Condvar::new(),
            undecoded_kept: Mutex::new(0),
            _lock: lock,
            fingerprint: fp,
            state: Mutex::new(State {
                segments,
                active,
                next_seq,
                cursors: state_cursors,
                total_bytes,
                dirty: false,
                ledger_dirty: false,
                ledger_written: Instant::now(),
                items_total: 0,
                reader_wake_at: u64::MAX,
                failed: None,
                closed: false,
                buf: Vec::new(),
                recent: Recent::default(),
            }),
            appended: Condvar::new(),
            space: Condvar::new(),
            stats,
            flusher: Arc::new(FlushSignal::default()),
        });
        let spool = Spool { shared };
        publish_positions(&spool.shared, &spool.lock());
        if let Err(e) = write_ledger(&spool.shared.cfg, &spool.lock()) {
            // The positions are in memory; the next acknowledgement retries.
            tracing::error!(error = %e, "cannot write the spool ledger at start");
        }
        spawn_flusher(
            Arc::downgrade(&spool.shared),
            spool.shared.flusher.clone(),
            match spool.shared.cfg.fsync {
                FsyncPolicy::Interval(every) => every,
                _ => LEDGER_INTERVAL,
            },
        );
        Ok((spool, report))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> &SpoolStats {
        &self.shared.stats
    }

    pub fn dir(&self) -> &Path {
        &self.shared.cfg.dir
    }

    /// Fingerprint of the current point table (see `points`).
    pub fn fingerprint(&self) -> u64 {
        self.shared.fingerprint
    }

    /// Records appended but not yet acknowledged by the slowest cursor.
    /// Lock-free (see [`Shared::last_seq`]).
    pub fn pending_records(&self) -> u64 {
        let last = self.shared.last_seq.load(Ordering::Acquire);
        let min = self.shared.min_acked.load(Ordering::Acquire);
        last.saturating_sub(min)
    }

    /// Lets points registered at run time in `registry` be named in the
    /// point table (before the first record that uses them), so a restart
    /// keeps their ids and a replay maps them.
    pub fn attach_registry(&self, registry: Arc<PointRegistry>) {
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .registry = Some(registry);
    }

    /// Appends to the point table the run-time points up to `max_id`.
    fn extend_table(&self, max_id: usize) {
        let mut table = self
            .shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if max_id < table.lines {
            return;
        }
        let Some(registry) = table.registry.clone() else {
            return;
        };
        let new: Vec<&adit_core::PointMeta> = (table.lines..=max_id)
            .map_while(|i| registry.get(adit_core::PointId(i as u32)))
            .collect();
        let dir = &self.shared.cfg.dir;
        match append_runtime(dir, self.shared.fingerprint, &new) {
            Ok(added) => {
                table.lines += new.len();
                table.bytes += added;
                table.failing = false;
            }
            Err(e) => {
                // Never leave part of a line: the next append would follow it.
                let _ = truncate_table(dir, self.shared.fingerprint, table.bytes);
                if !std::mem::replace(&mut table.failing, true) {
                    tracing::error!(error = %e, "spool: cannot name new points in the point table; their readings are not spooled (counted as unnamed_point)");
                }
            }
        }
    }

    /// Appends a batch; returns its sequence number.
    pub fn append(&self, readings: &[Reading]) -> Result<u64, AppendError> {
        let fp = self.shared.fingerprint;
        if let Some(max_id) = self.names_new_points(readings) {
            self.extend_table(max_id);
            let named = self.table_lines();
            if max_id >= named {
                // Points the table could not name: keep them out, counted.
                let kept: Vec<Reading> = readings
                    .iter()
                    .filter(|r| r.point.index() < named)
                    .cloned()
                    .collect();
                self.shared
                    .stats
                    .dropped_unnamed_readings
                    .fetch_add((readings.len() - kept.len()) as u64, Ordering::Relaxed);
                if kept.is_empty() {
                    return Err(AppendError::Dropped(0));
                }
                return self.append_with(kept.len(), |buf| encode_batch(fp, &kept, buf), None);
            }
        }
        self.append_with(readings.len(), |buf| encode_batch(fp, readings, buf), None)
    }

    /// Like [`append`](Self::append), for a batch that is not changed
    /// after: the spool keeps it for readers that keep up, which then take
    /// it from memory instead of reading and decoding it back (see
    /// [`crate::recent`]).
    pub fn append_shared(&self, readings: &Arc<Vec<Reading>>) -> Result<u64, AppendError> {
        if self.names_new_points(readings).is_some() {
            return self.append(readings);
        }
        let fp = self.shared.fingerprint;
        self.append_with(
            readings.len(),
            |buf| encode_batch(fp, readings, buf),
            Some(readings),
        )
    }

    /// The highest point id of `readings` if the point table does not name
    /// it yet (and a registry is attached to name it from).
    fn names_new_points(&self, readings: &[Reading]) -> Option<usize> {
        let max_id = readings.iter().map(|r| r.point.index()).max()?;
        (max_id >= self.table_lines() && self.attached_registry().is_some()).then_some(max_id)
    }

    /// Appends alert transitions (stored in every sink's `alerts` table).
    pub fn append_alerts(&self, alerts: &[AlertRecord]) -> Result<u64, AppendError> {
        self.append_with(alerts.len(), |buf| encode_alerts(alerts, buf), None)
    }

    /// Appends an already encoded payload of `items` items (a quarantined
    /// batch being re-delivered).
    pub fn append_payload(&self, items: usize, payload: &[u8]) -> Result<u64, AppendError> {
        self.append_with(items, |buf| buf.extend_from_slice(payload), None)
    }

    /// Keeps a batch of readings a sink refused for good in `quarantine/`
    /// (fsynced) for `adit spool quarantine retry`. Returns the file.
    pub fn quarantine_readings(
        &self,
        sink: &str,
        seq: u64,
        readings: &[Reading],
    ) -> std::io::Result<PathBuf> {
        let mut payload = Vec::new();
        encode_batch(self.shared.fingerprint, readings, &mut payload);
        self.quarantine_payload(&format!("sink-{sink}-{seq:020}.bin"), seq, &payload)
    }

    /// Keeps alert transitions a sink refused for good in `quarantine/`.
    pub fn quarantine_alerts(
        &self,
        sink: &str,
        seq: u64,
        alerts: &[AlertRecord],
    ) -> std::io::Result<PathBuf> {
        let mut payload = Vec::new();
        encode_alerts(alerts, &mut payload);
        self.quarantine_payload(&format!("sink-{sink}-{seq:020}.alerts.bin"), seq, &payload)
    }

    /// Writes a refused batch's payload framed as a record (magic, length,
    /// sequence, CRC32C): a bit flipped on disk is found when it is listed
    /// or retried, not appended again under a fresh CRC.
    fn quarantine_payload(&self, name: &str, seq: u64, payload: &[u8]) -> std::io::Result<PathBuf> {
        let qdir = crate::quarantine::dir_of(&self.shared.cfg.dir);
        let path = qdir.join(name);
        let mut framed = Vec::with_capacity(crate::frame::HEADER_LEN + payload.len());
        crate::frame::encode_record(seq, payload, &mut framed);
        crate::recovery::write_durably(&qdir, &path, &framed, self.shared.cfg.faults.as_ref())?;
        Ok(path)
    }

    /// Keeps the payload of record `seq`, which passed its CRC but does not
    /// decode, in `quarantine/` as `sink-undecoded-<seq>.bin`: most likely
    /// a format a newer adit wrote before a rollback to this one, so an adit
    /// that reads it can append it again (`adit spool quarantine retry`)
    /// instead of it going with its segment. One file per record, however
    /// many sinks' readers find it.
    ///
    /// At most `max_bytes` of them a run (a rollback over a long backlog of
    /// a newer format must not fill the disk the spool shares): past that
    /// they are refused, and counted as not kept like a failed write.
    fn keep_undecodable(&self, seq: u64, payload: &[u8]) -> std::io::Result<PathBuf> {
        let name = format!("sink-{UNDECODED}-{seq:020}.bin");
        let path = crate::quarantine::dir_of(&self.shared.cfg.dir).join(&name);
        let mut kept = self
            .shared
            .undecoded_kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Kept already (by another sink's reader, or before a restart), whole.
        if let Ok(bytes) = std::fs::read(&path) {
            if let Parsed::Record {
                seq: s,
                payload: p,
                total,
            } = parse_record(&bytes)
            {
                if s == seq && p == payload && total == bytes.len() {
                    return Ok(path);
                }
            }
        }
        let bytes = (HEADER_LEN + payload.len()) as u64;
        if *kept + bytes > self.shared.cfg.max_bytes {
            return Err(std::io::Error::other(format!(
                "this run already kept {} bytes of undecodable records, the spool's max_bytes",
                *kept
            )));
        }
        let written = self.quarantine_payload(&name, seq, payload)?;
        *kept += bytes;
        Ok(written)
    }

    /// Appends one record; `kept` is the batch it encodes, for the handoff.
    /// `encode` only appends to the buffer it is given (the record's header
    /// room is already in it).
    fn append_with(
        &self,
        items: usize,
        encode: impl Fn(&mut Vec<u8>),
        kept: Option<&Arc<Vec<Reading>>>,
    ) -> Result<u64, AppendError> {
        let shared = &self.shared;
        let mut st = self.lock();
        loop {
            if let Some(why) = &st.failed {
                return Err(AppendError::Failed(why.clone()));
            }
            if st.closed {
                return Err(AppendError::Closed);
            }
            // The payload is encoded after room for its header, and the
            // header written over that room once the sequence is known.
            let mut record = std::mem::take(&mut st.buf);
            record.clear();
            record.resize(HEADER_LEN, 0);
            encode(&mut record);
            let record_len = record.len() as u64;
            st.buf = record;
            if record_len > u64::from(MAX_PAYLOAD) || record_len > shared.cfg.max_bytes {
                // No policy can make room for it: refuse it, counted, at once.
                shared
                    .stats
                    .dropped_too_large_readings
                    .fetch_add(items as u64, Ordering::Relaxed);
                tracing::error!(
                    items,
                    bytes = record_len,
                    max_bytes = shared.cfg.max_bytes,
                    "batch larger than the spool's size bound refused"
                );
                return Err(AppendError::TooLarge(items));
            }

            if st.total_bytes + record_len > shared.cfg.max_bytes && !st.segments.is_empty() {
                match shared.cfg.when_full {
                    WhenFull::DropNewest => {
                        shared
                            .stats
                            .dropped_newest_readings
                            .fetch_add(items as u64, Ordering::Relaxed);
                        return Err(AppendError::Dropped(items));
                    }
                    WhenFull::DropOldest => {
                        if !self.drop_oldest(&mut st) {
                            // Only the active segment is left: start a new one so it can go.
                            let (guard, rotated) = self.rotate_for_append(st, items)?;
                            st = guard;
                            if !rotated {
                                continue;
                            }
                            if !self.drop_oldest(&mut st) {
                                shared
                                    .stats
                                    .dropped_newest_readings
                                    .fetch_add(items as u64, Ordering::Relaxed);
                                return Err(AppendError::Dropped(items));
                            }
                        }
                        continue;
                    }
                    WhenFull::Block => {
                        st = self.wait_for_space(st);
                        continue;
                    }
                }
            }
            let needs_rotation = st.active.is_none()
                || st.segments.back().is_some_and(|s| {
                    s.bytes > 0 && s.bytes + record_len > shared.cfg.segment_bytes
                });
            if needs_rotation {
                let (guard, rotated) = self.rotate_for_append(st, items)?;
                st = guard;
                if !rotated {
                    continue;
                }
            }
            let seq = st.next_seq;
            let mut buf = std::mem::take(&mut st.buf);
            seal_record(seq, &mut buf);
            let faults = shared.cfg.faults.as_ref();
            let written = match st.active.as_mut() {
                Some(f) => write_or_undo(f, &buf, faults),
                None => Err(std::io::Error::other("no active segment")),
            };
            st.buf = buf;
            let before = match written {
                Ok(before) => before,
                // ENOSPC: the disk is full. Behave like a full spool.
                Err(e) if is_enospc(&e) => {
                    st = self.disk_full(st, items)?;
                    continue;
                }
                Err(e) => return Err(Self::fail(&mut st, &e)),
            };
            if shared.cfg.fsync == FsyncPolicy::Always {
                // Synced before the record counts as appended: a record that
                // failed its fsync is cut again, so what is reported as not
                // stored is not delivered either.
                if let Some(f) = st.active.as_ref() {
                    let synced = faults::check(faults, FileOp::Sync).and_then(|()| f.sync_data());
                    if let Err(e) = synced {
                        shared.stats.fsync_failures.fetch_add(1, Ordering::Relaxed);
                        let _ = f.set_len(before);
                        return Err(Self::fail(&mut st, &e));
                    }
                    shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                }
            }
            st.next_seq += 1;
            shared.last_seq.store(seq, Ordering::Release);
            st.total_bytes += record_len;
            let mut segment = None;
            if let Some(seg) = st.segments.back_mut() {
                seg.last_seq = seq;
                segment = Some(seg.first_seq);
                seg.bytes += record_len;
                seg.readings += items as u64;
            }
            if let Some(segment) = segment {
                // Where the write put it (the file's own position).
                st.recent.push(RecentRecord {
                    seq,
                    segment,
                    start: before,
                    end: before + record_len,
                    readings: kept.cloned(),
                });
            }
            match shared.cfg.fsync {
                FsyncPolicy::Always => self.mark_durable(seq),
                FsyncPolicy::Interval(_) => {
                    if !std::mem::replace(&mut st.dirty, true) {
                        shared.flusher.ring();
                    }
                }
                FsyncPolicy::Never => {
                    // "Durable" under `never` is in the file: it survives a
                    // process crash, which is all this policy promises.
                    st.dirty = true;
                    self.mark_durable(seq);
                }
            }
            let s = &shared.stats;
            s.appended_records.fetch_add(1, Ordering::Relaxed);
            s.appended_readings
                .fetch_add(items as u64, Ordering::Relaxed);
            s.appended_bytes.fetch_add(record_len, Ordering::Relaxed);
            s.bytes.store(st.total_bytes, Ordering::Relaxed);
            st.items_total += items.max(1) as u64;
            // Wake readers only when one of them wants it (a batch is due).
            let wake = st.items_total >= st.reader_wake_at;
            if wake {
                st.reader_wake_at = u64::MAX;
            }
            drop(st);
            if wake {
                shared.appended.notify_all();
            }
            return Ok(seq);
        }
    }

    /// Starts a new segment for an append. `Ok((st, false))`: no room for
    /// it (ENOSPC), `when_full` was applied, try the append again; a failed
    /// sync of the segment being closed fails the writer.
    fn rotate_for_append<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        items: usize,
    ) -> Result<(MutexGuard<'a, State>, bool), AppendError> {
        match self.rotate(&mut st) {
            Ok(()) => Ok((st, true)),
            Err(Rotate::Create(e)) if is_enospc(&e) => Ok((self.disk_full(st, items)?, false)),
            Err(Rotate::Sync(e) | Rotate::Create(e)) => Err(Self::fail(&mut st, &e)),
        }
    }

    /// A full disk (ENOSPC on a write or a new segment): applies `when_full`
    /// as a full spool does. `Ok` means try again.
    fn disk_full<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        items: usize,
    ) -> Result<MutexGuard<'a, State>, AppendError> {
        let stats = &self.shared.stats;
        stats.disk_full_events.fetch_add(1, Ordering::Relaxed);
        match self.shared.cfg.when_full {
            WhenFull::DropOldest if self.drop_oldest(&mut st) => Ok(st),
            WhenFull::Block => Ok(self.wait_for_space(st)),
            _ => {
                stats
                    .dropped_newest_readings
                    .fetch_add(items as u64, Ordering::Relaxed);
                Err(AppendError::Dropped(items))
            }
        }
    }

    /// Waits (at most 100 ms) for an acknowledgement to free space; counted.
    fn wait_for_space<'a>(&'a self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.shared
            .stats
            .block_waits
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .space
            .wait_timeout(st, Duration::from_millis(100))
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn fail(st: &mut State, e: &std::io::Error) -> AppendError {
        let why = e.to_string();
        tracing::error!(error = %why, "spool writer failed; refusing further appends until restart");
        st.failed = Some(why.clone());
        AppendError::Failed(why)
    }

    /// Records that everything up to `seq` is durable and wakes waiters.
    fn mark_durable(&self, seq: u64) {
        mark_durable(&self.shared, seq);
    }

    /// The highest sequence number whose record is as durable as
    /// `spool.fsync` promises: `always`, fsynced; `interval`, covered by an
    /// interval fsync (or rotation, or close); `never`, written to the file.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Waits up to `limit` for record `seq` to be durable; returns whether it is.
    pub fn wait_durable(&self, seq: u64, limit: Duration) -> bool {
        let shared = &self.shared;
        let deadline = Instant::now() + limit;
        let mut guard = shared
            .durable_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if shared.durable.load(Ordering::Acquire) >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = shared
                .durable_changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether the writer failed (appends are refused until a restart).
    pub fn has_failed(&self) -> bool {
        self.lock().failed.is_some()
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.shared.cfg.fsync
    }

    fn sync_active(&self, st: &mut State) -> std::io::Result<()> {
        if let Some(f) = st.active.as_ref() {
            let synced = faults::check(self.shared.cfg.faults.as_ref(), FileOp::Sync)
                .and_then(|()| f.sync_data());
            if let Err(e) = synced {
                self.shared
                    .stats
                    .fsync_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        st.dirty = false;
        // Earlier segments were synced when they were rotated out.
        self.mark_durable(st.next_seq - 1);
        Ok(())
    }

    /// Syncs the active segment (a failure there is an fsync failure) and
    /// starts a new one (a failure there may be a full disk).
    fn rotate(&self, st: &mut State) -> Result<(), Rotate> {
        if st.active.is_some() {
            self.sync_active(st).map_err(Rotate::Sync)?;
        }
        let path = seg_path(&self.shared.cfg.dir, st.next_seq);
        let f = faults::check(self.shared.cfg.faults.as_ref(), FileOp::Create)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path))
            .map_err(Rotate::Create)?;
        crate::sync_dir(&self.shared.cfg.dir).map_err(Rotate::Sync)?;
        st.segments.push_back(Segment::new(st.next_seq, path));
        st.active = Some(f);
        Ok(())
    }

    /// Deletes the oldest segment if it is not the active one, counting its
    /// unacknowledged readings as dropped. Returns whether one was dropped.
    fn drop_oldest(&self, st: &mut State) -> bool {
        if st.segments.len() < 2 {
            return false;
        }
        let Some(seg) = st.segments.pop_front() else {
            return false;
        };
        st.total_bytes -= seg.bytes;
        let min_acked = st.cursors.values().copied().min().unwrap_or(seg.last_seq);
        if min_acked < seg.last_seq {
            let unacked_share = if seg.last_seq >= seg.first_seq {
                (seg.last_seq - min_acked.max(seg.first_seq.saturating_sub(1))) as f64
                    / (seg.last_seq - seg.first_seq + 1) as f64
            } else {
                0.0
            };
            let dropped = (seg.readings as f64 * unacked_share).round() as u64;
            self.shared
                .stats
                .dropped_oldest_readings
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::error!(segment = %seg.path.display(), readings = dropped, "spool full: oldest segment dropped before every sink had it");
        }
        for acked in st.cursors.values_mut() {
            *acked = (*acked).max(seg.last_seq);
        }
        st.recent.forget_through(seg.last_seq);
        publish_positions(&self.shared, st);
        // Persist the moved cursors before the file goes, so that the next
        // start does not take the dropped range for records lost to damage.
        if let Err(e) = self.write_ledger_now(st) {
            tracing::warn!(error = %e, "cannot write the spool ledger before dropping a segment");
        }
        let _ = std::fs::remove_file(&seg.path);
        self.shared
            .stats
            .bytes
            .store(st.total_bytes, Ordering::Relaxed);
        true
    }

    /// Writes `ledger.json` now and marks it clean.
    fn write_ledger_now(&self, st: &mut State) -> Result<(), SpoolError> {
        write_ledger(&self.shared.cfg, st)?;
        st.ledger_dirty = false;
        st.ledger_written = Instant::now();
        Ok(())
    }

    /// Writes `ledger.json` if acknowledgements moved a cursor since it was
    /// last written (the sink stages call it when they stop).
    pub fn flush_ledger(&self) -> Result<(), SpoolError> {
        let mut st = self.lock();
        if st.ledger_dirty {
            self.write_ledger_now(&mut st)?;
        }
        Ok(())
    }

    /// Records that `cursor` has stored everything up to `seq` and deletes
    /// segments every cursor is done with. The ledger file follows within
    /// [`LEDGER_INTERVAL`] (at once when a segment is deleted).
    pub fn ack(&self, cursor: &str, seq: u64) -> Result<(), SpoolError> {
        let mut st = self.lock();
        if let Some(acked) = st.cursors.get_mut(cursor) {
            *acked = (*acked).max(seq);
        }
        publish_positions(&self.shared, &st);
        let was_dirty = std::mem::replace(&mut st.ledger_dirty, true);
        let min_acked = st.cursors.values().copied().min().unwrap_or(0);
        st.recent.forget_through(min_acked);
        let deletes =
            st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.last_seq <= min_acked);
        // A segment is deleted only after the ledger says it is done with
        // (else the next start would count its records as lost). Deleting
        // is safe even if the ledger cannot be written (a full disk):
        // deleted records cannot be replayed, and it is what frees the disk.
        let persisted = if deletes || st.ledger_written.elapsed() >= LEDGER_INTERVAL {
            let written = self.write_ledger_now(&mut st);
            if written.is_err() {
                // The flusher tries again (the next acknowledgement too).
                self.shared.flusher.ring();
            }
            written
        } else {
            if !was_dirty {
                // The flusher writes it when due (it already knows if dirty).
                self.shared.flusher.ring();
            }
            Ok(())
        };
        let mut freed = false;
        while st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.last_seq <= min_acked)
        {
            if let Some(seg) = st.segments.pop_front() {
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "cannot delete acknowledged segment");
                }
                st.total_bytes -= seg.bytes;
                freed = true;
            }
        }
        self.shared
            .stats
            .bytes
            .store(st.total_bytes, Ordering::Relaxed);
        drop(st);
        if freed {
            self.shared.space.notify_all();
        }
        persisted
    }

    fn table_lines(&self) -> usize {
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
    }

    fn attached_registry(&self) -> Option<Arc<PointRegistry>> {
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .registry
            .clone()
    }

    /// Bounds the handoff (see [`crate::recent`]) to `max_bytes` instead of
    /// its default; 0 turns it off. For tests of readers falling behind it.
    pub fn limit_handoff(&self, max_bytes: usize) {
        self.lock().recent.limit(max_bytes);
    }

    /// A reader for `cursor`, starting after its acknowledged position.
    pub fn reader(&self, cursor: &str, registry: &PointRegistry) -> Reader {
        let acked = self.lock().cursors.get(cursor).copied().unwrap_or(0);
        Reader {
            spool: self.clone(),
            cursor: cursor.to_string(),
            next_seq: acked + 1,
            open: None,
            resume_at: None,
            caught_up_at: None,
            mapper: IdMapper::new(registry, self.shared.fingerprint),
        }
    }

    /// Flushes and fsyncs, then refuses further appends and wakes waiters.
    pub fn close(&self) {
        let mut st = self.lock();
        if st.dirty && st.failed.is_none() {
            if let Err(e) = self.sync_active(&mut st) {
                // Waiters on durability must learn it will not come.
                tracing::error!(error = %e, "spool fsync at close failed");
                Self::fail(&mut st, &e);
            }
        }
        if st.ledger_dirty {
            if let Err(e) = self.write_ledger_now(&mut st) {
                tracing::warn!(error = %e, "cannot write the spool ledger at close; retried when the sinks stop");
            }
        }
        st.closed = true;
        drop(st);
        self.shared.appended.notify_all();
        self.shared.space.notify_all();
    }

    /// The sequence number of the last appended record (0 if none).
    /// Lock-free (see [`Shared::last_seq`]).
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }
}

/// The cursors named in the ledger of the spool in `dir` (empty if none).
pub(crate) fn ledger_cursors(dir: &Path) -> Vec<String> {
    std::fs::read(dir.join("ledger.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Ledger>(&b).ok())
        .map(|l| l.cursors.into_keys().collect())
        .unwrap_or_default()
}

/// Why a rotation failed.
enum Rotate {
    /// Syncing the segment being closed (or the directory) failed.
    Sync(std::io::Error),
    /// The new segment could not be created.
    Create(std::io::Error),
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28)
}

/// Appends `buf`; returns the file's length before it. On failure the file
/// is cut back, so half a record is never left for the next to follow.
fn write_or_undo(f: &mut File, buf: &[u8], faults: Option<&Arc<Faults>>) -> std::io::Result<u64> {
    let before = f.seek(SeekFrom::End(0))?;
    if let Err(e) = faults::write_all(faults, FileOp::Write, f, buf) {
        let _ = f.set_len(before);
        return Err(e);
    }
    Ok(before)
}

fn mark_durable(shared: &Shared, seq: u64) {
    shared.durable.fetch_max(seq, Ordering::AcqRel);
    let _guard = shared
        .durable_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    shared.durable_changed.notify_all();
}

/// Writes `ledger.json` durably: a temporary file, fsynced, renamed over
/// the old one, and the directory fsynced.
fn write_ledger(cfg: &SpoolConfig, st: &State) -> Result<(), SpoolError> {
    let dir = &cfg.dir;
    let ledger = Ledger {
        cursors: st.cursors.clone(),
        next_seq: st.next_seq,
    };
    let path = dir.join("ledger.json");
    let bytes = serde_json::to_vec(&ledger).map_err(|e| SpoolError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    faults::check(cfg.faults.as_ref(), FileOp::Ledger).map_err(io(&path))?;
    adit_core::durable::replace_file(dir, "ledger.json", &bytes).map_err(io(&path))
}

/// The background flusher: sleeps until rung (records appended under
/// `fsync = interval`, or a cursor moved), waits `every` so that one fsync
/// covers everything appended meanwhile, then syncs; a moved cursor is
/// written to the ledger when [`LEDGER_INTERVAL`] has passed since the last
/// write (it sleeps until then unless rung). Idle, it never wakes.
fn spawn_flusher(shared: Weak<Shared>, signal: Arc<FlushSignal>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("adit-spool-fsync".into())
        .spawn(move || {
            let mut ledger_due = None;
            loop {
                match signal.wait(ledger_due) {
                    Wake::Stopped => return,
                    Wake::Rung => std::thread::sleep(every),
                    Wake::TimedOut => {}
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                ledger_due = Spool { shared }.flush_once();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the spool fsync thread; data is synced at rotation and close only");
    }
}

impl Spool {
    /// One round of the flusher. Returns when it must come back for the
    /// ledger (dirty, not yet due, or its write failed).
    fn flush_once(&self) -> Option<Duration> {
        // fsync outside the lock, on a duplicate of the active segment's
        // descriptor (same file): appends and readers never wait for the
        // disk, which once made the slowest fsync everyone's latency.
        let (file, again) = {
            let mut st = self.lock();
            let mut again = None;
            // The ledger also while closed: sinks go on acknowledging while
            // shutdown drains them.
            if st.ledger_dirty {
                let since = st.ledger_written.elapsed();
                if since >= LEDGER_INTERVAL {
                    if let Err(e) = self.write_ledger_now(&mut st) {
                        tracing::warn!(error = %e, "cannot write the spool ledger; retrying");
                        again = Some(LEDGER_INTERVAL);
                    }
                } else {
                    again = Some(LEDGER_INTERVAL.saturating_sub(since));
                }
            }
            // Data only under `interval`: `never` promised no fsync, and
            // `always` has synced every record already.
            let interval = matches!(self.shared.cfg.fsync, FsyncPolicy::Interval(_));
            if st.closed || !interval || !st.dirty || st.failed.is_some() {
                return again;
            }
            let file = match st.active.as_ref().map(File::try_clone) {
                None => None,
                Some(Ok(f)) => {
                    st.dirty = false;
                    Some((f, st.next_seq - 1))
                }
                Some(Err(_)) => {
                    // Cannot duplicate the descriptor: sync under the lock.
                    if let Err(e) = self.sync_active(&mut st) {
                        Spool::fail(&mut st, &e);
                    }
                    None
                }
            };
            (file, again)
        };
        if let Some((f, upto)) = file {
            let stats = &self.shared.stats;
            let synced = faults::check(self.shared.cfg.faults.as_ref(), FileOp::Sync)
                .and_then(|()| f.sync_data());
            if let Err(e) = synced {
                stats.fsync_failures.fetch_add(1, Ordering::Relaxed);
                Spool::fail(&mut self.lock(), &e);
            } else {
                stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.mark_durable(upto);
            }
        }
        again
    }
}

/// A batch of records delivered to a cursor: acknowledge `last_seq` once the
/// readings are stored.
#[derive(Debug, Default)]
pub struct Delivered {
    pub last_seq: u64,
    pub records: u64,
    pub readings: Vec<Reading>,
    pub alerts: Vec<AlertRecord>,
    /// Readings whose point is no longer configured (counted, not delivered).
    pub unknown_points: u64,
}

/// A record as a reader gets it: its bytes from the file, or the readings
/// the handoff kept.
enum Record {
    Bytes(Vec<u8>),
    Kept(Arc<Vec<Reading>>),
}

/// Reads records for one cursor, in order.
pub struct Reader {
    spool: Spool,
    cursor: String,
    next_seq: u64,
    open: Option<OpenSegment>,
    /// Where to start in segment `.0` when it is next opened: after the
    /// records taken from the handoff (`None`: at its start).
    resume_at: Option<(u64, u64)>,
    /// The spool's `items_total` when this reader last found nothing more
    /// to read (`None`: it may not have read everything).
    caught_up_at: Option<u64>,
    mapper: IdMapper,
}

/// The segment a reader is in, with a window of its bytes.
struct OpenSegment {
    first_seq: u64,
    file: File,
    /// Offset of the next record.
    offset: u64,
    /// Bytes of the file from `buf_at`; only bytes the spool has committed
    /// (below the segment's length under the lock), so never a record cut
    /// back after a failed write.
    buf: Vec<u8>,
    buf_at: u64,
}

impl OpenSegment {
    /// Makes `buf` hold `[offset, offset + n)`, reading up to [`READ_CHUNK`]
    /// (never past `committed`) in one call. `false`: the file is shorter.
    fn fill(&mut self, n: u64, committed: u64) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let end = self.offset + n;
        if self.buf_at <= self.offset && self.buf_at + self.buf.len() as u64 >= end {
            return Ok(true);
        }
        let upto = committed.min(self.offset + READ_CHUNK as u64).max(end);
        self.buf.resize((upto - self.offset) as usize, 0);
        self.buf_at = self.offset;
        match self.file.read_exact_at(&mut self.buf, self.offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.buf.clear();
                Ok(false)
            }
            Err(e) => {
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// `len` bytes at `offset` (after a successful [`fill`](Self::fill)).
    fn bytes(&self, len: u64) -> &[u8] {
        let start = (self.offset - self.buf_at) as usize;
        &self.buf[start..start + len as usize]
    }
}

impl Reader {
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// Waits until at least `items` readings (or alerts) were appended after
    /// what this reader has read, or until `deadline`, or until the spool
    /// closes; returns at once if the reader may not be caught up. Appends
    /// below the threshold do not wake it: a sink waits for a whole batch
    /// or its delay, not for every append.
    pub fn wait_for(&mut self, items: u64, deadline: Option<Instant>) {
        let Some(seen) = self.caught_up_at else {
            return;
        };
        let target = seen.saturating_add(items.max(1));
        let shared = &self.spool.shared;
        let mut st = self.spool.lock();
        loop {
            if st.closed || st.items_total >= target {
                return;
            }
            let now = Instant::now();
            let left = deadline.map_or(READER_MAX_WAIT, |d| {
                d.saturating_duration_since(now).min(READER_MAX_WAIT)
            });
            if left.is_zero() {
                return;
            }
            st.reader_wake_at = st.reader_wake_at.min(target);
            let (guard, timeout) = shared
                .appended
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner);
            st = guard;
            if timeout.timed_out() {
                return;
            }
        }
    }

    /// Waits up to `wait` for at least one record, then returns what is
    /// available, up to about `max_readings` readings. An empty result means
    /// nothing arrived (or the spool was closed and everything was read).
    pub fn next(&mut self, max_readings: usize, wait: Duration) -> Result<Delivered, SpoolError> {
        let mut readings = Vec::new();
        let mut out = self.next_into(&mut readings, max_readings, wait)?;
        out.readings = readings;
        Ok(out)
    }

    /// Like [`next`](Self::next), but appends the readings to `readings`
    /// (a sink's batch, which keeps its capacity from one batch to the next:
    /// no growing vector per call and no copy into the batch); the returned
    /// [`Delivered`] holds everything else, with `readings` left empty.
    /// `max_readings` counts the readings this call appends.
    pub fn next_into(
        &mut self,
        readings: &mut Vec<Reading>,
        max_readings: usize,
        wait: Duration,
    ) -> Result<Delivered, SpoolError> {
        let deadline = Instant::now() + wait;
        {
            let shared = &self.spool.shared;
            let mut st = self.spool.lock();
            while st.next_seq <= self.next_seq && !st.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.caught_up_at = Some(st.items_total);
                    return Ok(Delivered::default());
                }
                // Any append from here on is one this reader waits for.
                st.reader_wake_at = st.reader_wake_at.min(st.items_total + 1);
                st = shared
                    .appended
                    .wait_timeout(st, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let mut out = Delivered::default();
        let live = self.spool.attached_registry();
        let limit = readings.len().saturating_add(max_readings);
        while readings.len() < limit {
            let (seq, payload) = match self.read_record()? {
                None => break,
                Some((seq, Record::Kept(kept))) => {
                    // This run's own ids: every one the live registry holds
                    // is delivered as it is (as `IdMapper::map` would).
                    let known = live.as_ref().map_or(usize::MAX, |l| l.len());
                    readings.reserve(kept.len());
                    for r in kept.iter() {
                        if r.point.index() < known {
                            readings.push(r.clone());
                        } else {
                            out.unknown_points += 1;
                        }
                    }
                    out.last_seq = seq;
                    out.records += 1;
                    continue;
                }
                Some((seq, Record::Bytes(payload))) => (seq, payload),
            };
            match decode_payload(&payload) {
                Ok(Payload::Alerts(alerts)) => out.alerts.extend(alerts),
                Ok(Payload::Readings(fp, decoded)) => {
                    readings.reserve(decoded.len());
                    for mut r in decoded {
                        match self.mapper.map(
                            &self.spool.shared.cfg.dir,
                            fp,
                            r.point,
                            live.as_deref(),
                        ) {
                            // A point the registry does not have (it was full
                            // when an earlier run's points were registered again).
                            Some(id) if live.as_ref().is_some_and(|l| !l.contains(id)) => {
                                out.unknown_points += 1;
                            }
                            Some(id) => {
                                r.point = id;
                                readings.push(r);
                            }
                            None => out.unknown_points += 1,
                        }
                    }
                }
                Err(e) => {
                    let stats = &self.spool.shared.stats;
                    stats.undecodable_records.fetch_add(1, Ordering::Relaxed);
                    stats
                        .undecodable_readings
                        .fetch_add(items_in(&payload), Ordering::Relaxed);
                    match self.spool.keep_undecodable(seq, &payload) {
                        Ok(path) => {
                            tracing::error!(seq, error = %e, kept = %path.display(), "spool record passed its CRC but does not decode (written by a newer adit?); skipped, counted and kept in quarantine for `adit spool quarantine retry`");
                        }
                        Err(io) => {
                            stats.undecodable_not_kept.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(seq, error = %e, quarantine_error = %io, "spool record passed its CRC but does not decode; skipped and counted, and it could not be kept in quarantine");
                        }
                    }
                }
            }
            out.last_seq = seq;
            out.records += 1;
        }
        if out.unknown_points > 0 {
            self.spool
                .shared
                .stats
                .dropped_unknown_point_readings
                .fetch_add(out.unknown_points, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Moves the file position to `offset` in segment `segment` (after a
    /// record taken from the handoff, or before one it holds no readings
    /// for), so the file is never read twice nor scanned for the position.
    fn position_at(&mut self, segment: u64, offset: u64) {
        match self.open.as_mut() {
            Some(open) if open.first_seq == segment => {
                open.offset = offset;
                self.resume_at = None;
            }
            _ => {
                self.open = None;
                self.resume_at = Some((segment, offset));
            }
        }
    }

    /// The next record at or after `next_seq` that has been appended.
    fn read_record(&mut self) -> Result<Option<(u64, Record)>, SpoolError> {
        loop {
            let (appended_to, segment, items_total, from_file_at) = {
                let st = self.spool.lock();
                let last = st.next_seq - 1;
                if self.next_seq > last {
                    self.caught_up_at = Some(st.items_total);
                    return Ok(None);
                }
                let mut from_file_at = None;
                if let Some(rec) = st.recent.get(self.next_seq) {
                    if let Some(kept) = rec.readings.clone() {
                        let (seq, segment, end) = (rec.seq, rec.segment, rec.end);
                        drop(st);
                        self.caught_up_at = None;
                        self.position_at(segment, end);
                        self.next_seq = seq + 1;
                        let stats = &self.spool.shared.stats;
                        stats.handed_off_records.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some((seq, Record::Kept(kept))));
                    }
                    // Held without its readings: read it from the file, there.
                    from_file_at = Some((rec.segment, rec.start));
                }
                // The segment holding next_seq, or the first after it (older
                // records may have been dropped); never an empty one (a
                // segment cut to nothing by recovery holds no record).
                let seg = st
                    .segments
                    .iter()
                    .find(|s| s.last_seq >= s.first_seq && s.last_seq >= self.next_seq)
                    .map(|s| {
                        (
                            s.first_seq,
                            s.path.clone(),
                            s.last_seq,
                            s.holes.clone(),
                            s.bytes,
                        )
                    });
                (last, seg, st.items_total, from_file_at)
            };
            if let Some((segment, at)) = from_file_at {
                self.position_at(segment, at);
            }
            let Some((first_seq, path, segment_last, holes, committed)) = segment else {
                // No record left to read (those up to `last` were lost at
                // recovery): caught up, so a waiting sink sleeps.
                self.caught_up_at = Some(items_total);
                return Ok(None);
            };
            self.caught_up_at = None;
            if self.open.as_ref().is_none_or(|o| o.first_seq != first_seq) {
                let file = File::open(&path).map_err(io(&path))?;
                let buf = self.open.take().map(|o| o.buf).unwrap_or_default();
                let offset = match self.resume_at.take() {
                    Some((segment, at)) if segment == first_seq => at,
                    _ => 0,
                };
                self.open = Some(OpenSegment {
                    first_seq,
                    file,
                    offset,
                    buf,
                    buf_at: 0,
                });
                if let Some(o) = self.open.as_mut() {
                    o.buf.clear();
                }
                self.next_seq = self.next_seq.max(first_seq);
            }
            let Some(open) = self.open.as_mut() else {
                return Ok(None);
            };
            if let Some(&(_, len)) = holes.iter().find(|(at, _)| *at == open.offset) {
                open.offset += len; // damage recovery could not mark on disk
                continue;
            }
            let header = HEADER_LEN as u64;
            let has_header = open.offset + header <= committed
                && open.fill(header, committed).map_err(io(&path))?;
            if !has_header {
                if segment_last >= self.next_seq || self.next_seq > appended_to {
                    // The segment says it holds this record but the file ends:
                    // it changed under us (deleted or truncated from outside).
                    self.open = None;
                    return Err(SpoolError::Io {
                        path,
                        source: std::io::Error::other(format!(
                            "segment ends before record {}",
                            self.next_seq
                        )),
                    });
                }
                self.open = None;
                continue;
            }
            let h = open.bytes(header);
            let len = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]).min(MAX_PAYLOAD));
            let whole = open.offset + header + len <= committed
                && open.fill(header + len, committed).map_err(io(&path))?;
            let parsed = if whole {
                parse_record(open.bytes(header + len))
            } else {
                Parsed::Incomplete
            };
            if let Parsed::Record {
                seq,
                payload,
                total,
            } = parsed
            {
                let payload = payload.to_vec();
                open.offset += total as u64;
                if seq < self.next_seq {
                    continue;
                }
                self.next_seq = seq + 1;
                return Ok(Some((seq, Record::Bytes(payload))));
            }
            let offset = open.offset;
            self.open = None;
            return Err(SpoolError::Io {
                path,
                source: std::io::Error::other(format!(
                    "record at offset {offset} does not parse after recovery"
                )),
            });
        }
    }
}

/// Test hook: the cursors and their acknowledged positions.
impl Spool {
    pub fn cursors(&self) -> HashMap<String, u64> {
        self.lock()
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}
